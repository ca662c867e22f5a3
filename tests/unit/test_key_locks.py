"""Per-key locks: one pass per key at a time, and no entry left once nobody holds it."""

from __future__ import annotations

import threading
import time

from keyledger.operations.locks import KeyLocks


def test_the_lock_map_forgets_keys_nobody_holds() -> None:
    locks = KeyLocks()
    for n in range(1000):
        with locks.hold(f"uid-{n}"):
            assert len(locks) == 1
    assert len(locks) == 0


def test_two_passes_on_one_key_run_one_at_a_time() -> None:
    locks = KeyLocks()
    inside: list[int] = []
    overlaps: list[int] = []

    def work() -> None:
        for _ in range(50):
            with locks.hold("uid-1"):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert len(locks) == 0


def test_other_keys_do_not_wait() -> None:
    locks = KeyLocks()
    with locks.hold("uid-1"):
        acquired = threading.Event()

        def other() -> None:
            with locks.hold("uid-2"):
                acquired.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert acquired.wait(5)
        thread.join()
        assert len(locks) == 1
