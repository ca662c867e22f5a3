"""KMS backends behind one Protocol (`base.KeyBackend`) and a registry of constructors."""
