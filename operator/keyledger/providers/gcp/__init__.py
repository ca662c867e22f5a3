"""The `gcp` backend."""
