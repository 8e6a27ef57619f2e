"""Wire formats: reports as authenticated packets and statefile slots."""
