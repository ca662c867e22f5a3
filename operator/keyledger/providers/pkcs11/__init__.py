"""The `pkcs11` backend."""
