"""The `keyledger` / `kubectl keyledger` command."""
