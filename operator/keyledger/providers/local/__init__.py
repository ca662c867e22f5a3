"""The `local` backend."""
