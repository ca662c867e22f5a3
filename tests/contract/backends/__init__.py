"""One module per backend under contract test.

Each module defines `NAME` and `open_target(workdir: Path) -> ContextManager[ContractTarget]`,
which starts (or finds) the real server or emulator and yields a target. The
contract suite discovers the modules; adding a backend means adding a module here.
"""
