"""The rewrap journal: what a killed run had finished, and nothing it had not."""

from __future__ import annotations

from pathlib import Path

from keyledger.client.rewrap import Journal


def test_finished_ids_survive_and_a_torn_last_line_does_not_count(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = Journal(path, sync_every=1)
    journal.add("row-1")
    journal.add("row-12")
    journal.close()
    with path.open("a") as file:
        file.write("row-9")  # a run killed while writing "row-99\n"; row-9 is not done

    resumed = Journal(path)
    assert resumed.done == {"row-1", "row-12"}
    resumed.add("row-99")
    resumed.close()
    assert Journal(path).done == {"row-1", "row-12", "row-99"}
    assert path.read_text().splitlines() == ["row-1", "row-12", "row-99"]
