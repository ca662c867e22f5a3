"""One module per registered backend under contract test, named as its provider subpackage.

Each module (e.g. `aws.py` for `keyledger.providers.aws`) defines
`open_target(workdir: Path) -> ContextManager[ContractTarget]`, which starts (or
finds) the real server or emulator and yields a target. The contract suite takes
the backends from the registry (`keyledger.providers.registry.BACKENDS`) and
finds their modules here; adding a backend means adding a module here.
"""
