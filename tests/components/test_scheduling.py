"""The pane scheduler: immediate outside a server, deferred while a pane is hidden, caught up when shown."""

from __future__ import annotations

from lse_panel.components.scheduling import Scheduler, served


def test_runs_at_once_outside_a_server() -> None:
    assert not served()
    runs: list[str] = []
    Scheduler().schedule("means", None, lambda: runs.append("means"))
    assert runs == ["means"]


def test_hidden_pane_defers_and_coalesces_then_catches_up_once() -> None:
    scheduler = Scheduler()
    runs: list[int] = []
    scheduler.set_active(False)
    for value in range(3):  # three lassos while the tab is hidden
        scheduler.schedule("means", None, lambda value=value: runs.append(value))
    assert runs == []
    scheduler.set_active(True)
    assert runs == [2]  # only the latest state is computed
    scheduler.set_active(True)
    assert runs == [2]  # nothing stale left


def test_each_kind_of_work_is_kept_apart() -> None:
    scheduler = Scheduler()
    runs: list[str] = []
    scheduler.set_active(False)
    scheduler.schedule("means", None, lambda: runs.append("means"))
    scheduler.schedule("samples", None, lambda: runs.append("samples"))
    scheduler.set_active(True)
    assert sorted(runs) == ["means", "samples"]
