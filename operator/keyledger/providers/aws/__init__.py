"""The `aws` backend."""
