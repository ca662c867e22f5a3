"""keyledger tests."""
