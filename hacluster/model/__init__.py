"""Pool definitions on disk (TOML) and synthetic pools for planning and benchmarks."""
