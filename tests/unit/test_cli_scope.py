"""`keyledger run` turns KEYLEDGER_NAMESPACES into kopf's own namespace scope."""

from __future__ import annotations

import pytest

from keyledger.cli.main import kopf_scope


def test_no_patterns_serves_every_namespace() -> None:
    assert kopf_scope(["--standalone"], []) == ["--all-namespaces"]


def test_patterns_become_kopf_namespaces() -> None:
    assert kopf_scope([], ["tenant-*", "billing"]) == [
        "--namespace=tenant-*",
        "--namespace=billing",
    ]


@pytest.mark.parametrize("given", [["-n", "x"], ["--namespace=x"], ["-A"], ["--all-namespaces"]])
def test_the_users_own_kopf_scope_is_kept(given: list[str]) -> None:
    assert kopf_scope(given, []) == []


def test_two_scopes_at_once_are_refused_naming_both() -> None:
    with pytest.raises(
        SystemExit, match=r"KEYLEDGER_NAMESPACES \(tenant-\*\) and --all-namespaces"
    ):
        kopf_scope(["--all-namespaces"], ["tenant-*"])
