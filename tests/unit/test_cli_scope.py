"""`keyledger run` turns KEYLEDGER_NAMESPACES into kopf's own namespace scope."""

from __future__ import annotations

import pytest

from keyledger.cli.main import kopf_peering, kopf_scope


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


def test_no_peering_runs_standalone() -> None:
    assert kopf_peering([], "", None) == ["--standalone"]


def test_a_peering_name_joins_it_with_the_given_priority() -> None:
    assert kopf_peering([], "keyledger", 7) == ["--peering=keyledger", "--priority=7"]


def test_an_unset_priority_is_a_random_positive_one() -> None:
    args = kopf_peering([], "keyledger", None)
    assert args[0] == "--peering=keyledger"
    priority = int(args[1].removeprefix("--priority="))
    assert 1 <= priority < 2**31


@pytest.mark.parametrize(
    "given", [["--standalone"], ["--peering=other"], ["-P", "x"], ["--priority=3"]]
)
def test_the_users_own_peering_options_are_kept(given: list[str]) -> None:
    assert kopf_peering(given, "keyledger", None) == []
