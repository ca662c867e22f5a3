"""Pure key-lifecycle logic: no kopf, no SDKs, no I/O."""
