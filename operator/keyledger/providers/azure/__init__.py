"""The `azure` backend."""
