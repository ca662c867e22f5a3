"""Helpers that start and talk to the real servers the tests run against."""
