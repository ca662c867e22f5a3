"""Tests against real servers: the control plane, PostgreSQL, KMS emulators."""
