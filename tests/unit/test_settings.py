"""The operator's environment is read through Settings only (prefix KEYLEDGER_)."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyledger import failpoints
from keyledger.settings import Settings, get_settings
from keyledger.store.engine import migrations_dir

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "keyledger"
REPO_MIGRATIONS = PACKAGE.parents[1] / "migrations"


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """get_settings() reads the environment once; let a test change it first."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_failpoints_are_a_comma_separated_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KEYLEDGER_FAILPOINTS", "finish-pending.after-kms-create, rollback.after-make-primary,"
    )
    assert Settings().failpoints == {
        "finish-pending.after-kms-create",
        "rollback.after-make-primary",
    }
    monkeypatch.delenv("KEYLEDGER_FAILPOINTS")
    assert Settings().failpoints == frozenset()


@pytest.mark.usefixtures("fresh_settings")
def test_an_armed_failpoint_kills_the_process_at_that_point_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv("KEYLEDGER_FAILPOINTS", "rollback.after-make-primary")
    failpoints.failpoint("finish-pending.after-kms-create")
    assert kills == []
    failpoints.failpoint("rollback.after-make-primary")
    assert len(kills) == 1


def test_migrations_dir_follows_the_environment_of_the_moment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert migrations_dir() == REPO_MIGRATIONS
    (tmp_path / "env.py").write_text("")
    monkeypatch.setenv("KEYLEDGER_MIGRATIONS_DIR", str(tmp_path))
    assert migrations_dir() == tmp_path
    monkeypatch.setenv("KEYLEDGER_MIGRATIONS_DIR", "")
    assert migrations_dir() == REPO_MIGRATIONS


def test_a_migrations_dir_without_alembic_says_which_variable_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KEYLEDGER_MIGRATIONS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="KEYLEDGER_MIGRATIONS_DIR"):
        migrations_dir()


def _environment_reads(path: Path) -> list[str]:
    reads = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
            reads.append(f"{path.relative_to(PACKAGE)}:{node.lineno} uses os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names} & {"environ", "getenv", "environb"}
            reads.extend(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {n}" for n in names)
    return reads


def test_the_package_reads_the_environment_only_through_settings() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    reads = [read for module in modules for read in _environment_reads(module)]
    assert not reads, "read it through a Settings field instead:\n" + "\n".join(reads)


def test_handler_threads_default_to_eight_and_stay_within_the_ledger_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KEYLEDGER_HANDLER_THREADS", raising=False)
    assert Settings().handler_threads == 8
    monkeypatch.setenv("KEYLEDGER_HANDLER_THREADS", "4")
    assert Settings().handler_threads == 4
    monkeypatch.setenv("KEYLEDGER_HANDLER_THREADS", "64")
    with pytest.raises(ValueError, match="handler_threads"):
        Settings()
