"""Fault injection for the subgroup store: SIGKILL a process saving, overwriting and deleting subgroups, then check the bundle."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lse_panel.cohort.bundle import open_bundle
from lse_panel.cohort.store_files import named_files, read_listing
from lse_panel.cohort.subgroups import MEMBER_DIR, STORE_FILE, STORE_VERSION, SubgroupStore

__all__ = ["SaveFaultReport", "expected_after", "operation", "run_save_trials", "save_worker"]


def operation(k: int, n_subjects: int) -> tuple[str, str, np.ndarray | None]:
    """The ``k``-th change the worker makes: ``(kind, name, rows)``; the same for every run (seeded by ``k``).

    Saves of new subgroups, overwrites of the one saved two changes before, and deletes of the one
    saved three before, so every kind of replace is interrupted somewhere.
    """
    rows = np.sort(np.random.default_rng(k).choice(n_subjects, size=20 + k % 50, replace=False)).astype(np.int64)
    if k % 4 == 2:
        return "overwrite", f"s{k - 2}", rows
    if k % 4 == 3:
        return "delete", f"s{k - 3}", None
    return "save", f"s{k}", rows


def expected_after(done: int, n_subjects: int) -> dict[str, np.ndarray]:
    """Name → rows after changes ``0 .. done-1`` all landed."""
    state: dict[str, np.ndarray] = {}
    for k in range(done):
        kind, name, rows = operation(k, n_subjects)
        if kind == "delete":
            state.pop(name, None)
        else:
            state[name] = rows  # type: ignore[assignment]
    return state


def save_worker(bundle: str, start: int) -> None:
    """Make changes ``start, start+1, ...`` to the bundle's subgroups forever, printing ``k`` after each lands."""
    store = SubgroupStore(open_bundle(bundle))
    n = store.cohort.n_subjects
    print("ready", flush=True)
    k = start
    while True:
        kind, name, rows = operation(k, n)
        if kind == "delete":
            store.delete(name)
        else:
            store.save(name, rows, overwrite=kind == "overwrite")
        print(k, flush=True)
        k += 1


@dataclass
class SaveFaultReport:
    """Counts over every kill of the subgroup-saving worker."""

    kills: int = 0
    changes_acknowledged: int = 0
    in_flight_landed: int = 0
    in_flight_absent: int = 0
    backup_used: int = 0
    temporaries_after_kill: int = 0
    app_loaded: int = 0
    failures: list[str] = field(default_factory=list)
    leftovers_at_end: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"kills {self.kills}; changes acknowledged before a kill {self.changes_acknowledged}; the change in "
                f"flight at the kill: landed {self.in_flight_landed}, not landed {self.in_flight_absent}; backup "
                f"generation needed {self.backup_used}; temporary files a kill left (removed by the next change) "
                f"{self.temporaries_after_kill}; app loaded after the kill {self.app_loaded}/{self.kills}; "
                f"acknowledged changes lost or subgroups corrupt {len(self.failures)}; stale or orphan files at the "
                f"end {len(self.leftovers_at_end)}")  # fmt: skip


def _on_disk(bundle: Path) -> dict[str, np.ndarray]:
    store = SubgroupStore(open_bundle(bundle))
    return {name: np.asarray(store.members(name)) for name in store.names()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def run_save_trials(bundle: Path, *, kills: int, rng: np.random.Generator, max_delay_s: float,
                    load_app: bool = True) -> SaveFaultReport:  # fmt: skip
    """SIGKILL a :func:`save_worker` on ``bundle`` ``kills`` times, each after a random delay once it is ready.

    After each kill: every acknowledged change is on disk, the change in flight either fully
    landed or left no trace, each subgroup's members are exactly what was saved, and (with
    ``load_app``) the explorer builds on the bundle. The next worker resumes with the first change
    not on disk. At the end one more change runs to completion and no temporary file, nor any member
    file that neither the listing nor its backup names, may remain.
    """
    report = SaveFaultReport()
    n = open_bundle(bundle).n_subjects
    done = 0
    while report.kills < kills:
        worker = subprocess.Popen(
            [sys.executable, "-c", "import sys; from lse_panel.faults_subgroups import save_worker; "
             "save_worker(sys.argv[1], int(sys.argv[2]))", str(bundle), str(done)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            report.failures.append(f"the worker did not start: {worker.communicate()[1][-800:]}")
            break
        time.sleep(float(rng.uniform(0, max_delay_s)))
        worker.send_signal(signal.SIGKILL)
        out, err = worker.communicate()
        report.kills += 1
        acknowledged = [int(line) for line in out.split() if line.strip().isdigit()]
        if worker.returncode != -signal.SIGKILL:
            report.failures.append(f"the worker ended by itself ({worker.returncode}): {err[-800:]}")
        done += len(acknowledged)
        report.changes_acknowledged += len(acknowledged)
        report.temporaries_after_kill += sum(1 for _ in bundle.rglob("*.tmp"))
        report.backup_used += read_listing(bundle / STORE_FILE, STORE_VERSION)[1] is not None
        try:
            found = _on_disk(bundle)
        except Exception as exc:  # noqa: BLE001 - any failure to read is what this counts
            report.failures.append(f"after kill {report.kills}: the subgroups cannot be read: {exc}")
            break
        if _same(found, expected_after(done, n)):
            report.in_flight_absent += 1
        elif _same(found, expected_after(done + 1, n)):
            report.in_flight_landed += 1
            done += 1  # it landed: the next worker starts after it
        else:
            report.failures.append(f"after kill {report.kills}: the subgroups on disk match neither {done} nor "
                                   f"{done + 1} changes")  # fmt: skip
            break
        if load_app:
            from lse_panel.components.explorer import Explorer

            try:
                Explorer.from_bundle(bundle, decode=None)
                report.app_loaded += 1
            except Exception as exc:  # noqa: BLE001
                report.failures.append(f"after kill {report.kills}: the explorer does not load: {exc}")
    # One change to completion: it removes whatever the kills left.
    store = SubgroupStore(open_bundle(bundle))
    store.save("final", np.arange(10))
    entries, _ = read_listing(bundle / STORE_FILE, STORE_VERSION)
    backup, _ = read_listing(bundle / (STORE_FILE + ".bak"), STORE_VERSION)
    named = named_files(entries.values()) | named_files(backup.values())
    report.leftovers_at_end += [str(p) for p in bundle.rglob("*.tmp")]
    report.leftovers_at_end += [str(p) for p in (bundle / MEMBER_DIR).iterdir() if f"{MEMBER_DIR}/{p.name}" not in named]
    return report
