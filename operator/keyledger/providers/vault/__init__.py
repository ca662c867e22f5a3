"""The `vault` backend."""
