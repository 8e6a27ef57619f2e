"""Lab clusters: pools of real node processes to watch and break on one machine."""
