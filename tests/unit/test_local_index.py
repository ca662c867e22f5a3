"""The local keystore's in-memory indexes: versions that never change once made."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from keyledger.providers.local.index import FrozenIndex, StagedChanges


def _contents(index: FrozenIndex[int]) -> dict[str, int]:
    contents = dict(index.items())
    assert list(index) == list(contents) and len(index) == len(contents)
    return contents


def test_every_version_keeps_its_contents_through_changes_forks_and_flattening() -> None:
    rng = random.Random(7)
    index: FrozenIndex[int] = FrozenIndex({f"k{i}": i for i in range(40)})
    model = {f"k{i}": i for i in range(40)}
    kept: list[tuple[FrozenIndex[int], dict[str, int]]] = [(index, dict(model))]
    for step in range(1500):  # from 40 keys to several hundred: many flattenings
        changes: dict[str, int | None] = {}
        for _ in range(rng.randint(1, 4)):
            key = f"k{rng.randrange(600)}"
            changes[key] = None if rng.random() < 0.3 else step
        if step % 97 == 0:
            # A second version made from an old one: it must not disturb the newer ones.
            old, old_model = kept[rng.randrange(len(kept))]
            forked = old.updated(changes)
            assert _contents(forked) == _apply(old_model, changes)
        index = index.updated(changes)
        model = _apply(model, changes)
        assert _contents(index) == model
        for key in changes:
            assert index.get(key) == model.get(key)
        if step % 10 == 0:
            kept.append((index, dict(model)))
    for version, contents in kept:
        assert _contents(version) == contents


def _apply(model: dict[str, int], changes: dict[str, int | None]) -> dict[str, int]:
    result = dict(model)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def test_removing_an_absent_key_and_reading_a_removed_one() -> None:
    index: FrozenIndex[int] = FrozenIndex({"a": 1})
    later = index.updated({"a": None, "b": None})
    assert len(later) == 0 and "a" not in later and later.get("a") is None
    with pytest.raises(KeyError):
        later["a"]
    assert index["a"] == 1


def test_a_version_read_while_newer_ones_are_made_does_not_change() -> None:
    index: FrozenIndex[int] = FrozenIndex({f"k{i}": i for i in range(2000)})
    held, expected = index, dict(index.items())
    done = threading.Event()

    def make_versions() -> None:
        newest = index
        for step in range(5000):  # past several flattenings
            newest = newest.updated({f"k{step % 3000}": -step, f"k{step % 1700}": None})
        done.set()

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the two threads finely
    try:
        maker = threading.Thread(target=make_versions)
        maker.start()
        reads = 0
        while not done.is_set() or reads == 0:
            assert dict(held.items()) == expected
            assert held.get("k5") == 5 and len(held) == 2000
            reads += 1
        maker.join()
    finally:
        sys.setswitchinterval(switch_interval)


def test_staged_changes_read_through_and_report_only_what_differs() -> None:
    entry, other = {"v": 1}, {"v": 2}
    base: FrozenIndex[dict[str, int]] = FrozenIndex({"a": entry, "b": other})
    staged = StagedChanges(base)
    staged["a"] = entry  # put back as it was: no change
    staged["c"] = {"v": 3}
    del staged["c"]  # added and removed again: no change
    del staged["b"]
    staged["d"] = {"v": 4}
    with pytest.raises(KeyError):
        del staged["b"]
    assert staged.get("b") is None and staged["a"] is entry
    assert dict(staged.items()) == {"a": entry, "d": {"v": 4}} and len(staged) == 2
    assert staged.changes() == {"b": None, "d": {"v": 4}}
    assert dict(base.items()) == {"a": entry, "b": other}
