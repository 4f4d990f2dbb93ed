"""Fault injection: kill ``lse build`` with SIGKILL at random moments and check what it leaves behind."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lse_panel.cohort.bundle import open_bundle, read_manifest
from lse_panel.cohort.schema import BundleError
from lse_panel.config import SETTINGS

__all__ = ["FaultReport", "bundle_arrays", "build_command", "check_after_kill", "leftovers", "run_build_trials"]

# What a refusal must say for a user to know what to do: it is half-built or interrupted, and a rerun resumes.
_CLEAR_REFUSAL = ("half-built", "interrupted build", "Re-run `lse build")


@dataclass
class FaultReport:
    """Counts over every kill of one or more trials (each: a few kills, then a run left to finish)."""

    kills: int = 0
    nothing_written: int = 0
    refused_clearly: int = 0
    loaded_intact: int = 0
    failures: list[str] = field(default_factory=list)
    reruns_completed: int = 0
    trials: int = 0
    identical_to_uninterrupted: int = 0
    leftover_files: list[str] = field(default_factory=list)

    @property
    def data_lost(self) -> int:
        """Trials whose finished bundle differs from an uninterrupted build's, or never finished."""
        return self.trials - self.identical_to_uninterrupted

    def add(self, other: FaultReport) -> None:
        for name in ("kills", "nothing_written", "refused_clearly", "loaded_intact", "reruns_completed",
                     "trials", "identical_to_uninterrupted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures
        self.leftover_files += other.leftover_files

    def summary(self) -> str:
        return (f"{self.trials} trials, kills injected {self.kills}; after each kill: "
                f"no bundle yet {self.nothing_written}, refused as half-built {self.refused_clearly}, loaded intact {self.loaded_intact}, "
                f"unclear or corrupt {len(self.failures)}; reruns completed {self.reruns_completed}/{self.trials}, "
                f"identical to an uninterrupted build {self.identical_to_uninterrupted}/{self.trials}; "
                f"data lost {self.data_lost}; temporary files left after the rerun {len(self.leftover_files)}")


def build_command(out: Path, *, subjects: int, seed: int, projections: Sequence[str]) -> list[str]:
    """The ``lse build`` a trial runs (the demo model, a small cohort)."""
    return [sys.executable, "-m", "lse_panel.cli", "build", "--out", str(out), "--subjects", str(subjects),
            "--seed", str(seed), "--model", str(SETTINGS.demo_model), "--projections", *projections]


def bundle_arrays(path: Path) -> dict[str, str]:
    """A digest of every column a loadable bundle names (file → sha256 of its values)."""
    manifest = read_manifest(path)
    files = [manifest["ids"]["file"]] + [m["file"] for m in manifest["phenotypes"].values()]
    for group in ("latents", "projections"):
        files += [m["file"] for m in manifest.get(group, {}).values()]
    files += [m["file"] for per in manifest.get("predictions", {}).values() for m in per.values()]
    return {f: hashlib.sha256(np.ascontiguousarray(np.load(path / f)).tobytes()).hexdigest() for f in sorted(files)}


def leftovers(path: Path) -> list[str]:
    """Temporary files and staging directories an interrupted write left in or beside the bundle."""
    found = [p for p in path.rglob(".*") if p.name != ".build.lock"] if path.exists() else []
    found += list(path.parent.glob(f".{path.name}.partial-*"))
    return sorted(str(p) for p in found)


def check_after_kill(path: Path, reference: dict[str, str]) -> str:
    """``"absent"``, ``"refused"`` or ``"intact"``; anything else raises ``AssertionError``.

    A bundle killed mid-build must not exist yet, be refused with a message that says it is
    half-built and how to resume, or load with every column equal to the uninterrupted build's.
    """
    if not path.exists():
        return "absent"  # killed before the first write landed: nothing to mistake for a bundle
    try:
        open_bundle(path)
    except BundleError as exc:
        if not any(words in str(exc) for words in _CLEAR_REFUSAL):
            raise AssertionError(f"refused without saying it is half-built: {exc}") from None
        return "refused"
    digest = bundle_arrays(path)
    changed = [f for f, h in digest.items() if reference.get(f) != h]
    if changed:
        raise AssertionError(f"loads, but these columns differ from an uninterrupted build: {changed}")
    return "intact"


def run_build_trials(root: Path, reference: dict[str, str], *, kills: int, rng: np.random.Generator,
                     max_delay_s: float, subjects: int, seed: int, projections: Sequence[str]) -> FaultReport:
    """Trials of ``lse build`` into fresh bundles under ``root`` until ``kills`` SIGKILLs have landed.

    In each trial, runs start one after the other on the same bundle, each killed after a delay
    drawn uniformly in ``[0, max_delay_s]``; the bundle is checked after every kill
    (:func:`check_after_kill`). The trial ends with the first run that finishes before its
    kill, a rerun that resumed from everything the kills left: its bundle must equal the
    uninterrupted build's, column for column, and no temporary file may remain.

    Parameters
    ----------
    root
        A directory for the trials' bundles.
    reference
        :func:`bundle_arrays` of an uninterrupted build with the same settings.
    kills
        SIGKILLs to deliver in all (the trial under way when the count is reached runs to its end).
    rng
        Draws the delays: a fixed seed repeats the run, up to the machine's timing.
    max_delay_s
        The longest delay: an uninterrupted build's duration, so every step can be hit.
    """
    report = FaultReport()
    while report.kills < kills:
        out = root / f"trial-{report.trials}"
        command = build_command(out, subjects=subjects, seed=seed, projections=projections)
        report.trials += 1
        while True:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            delay = float(rng.uniform(0, max_delay_s))
            try:
                _, stderr = proc.communicate(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                report.kills += 1
                try:
                    outcome = check_after_kill(out, reference)
                except AssertionError as exc:
                    report.failures.append(f"after a kill at {delay:.2f} s: {exc}")
                    continue
                report.nothing_written += outcome == "absent"
                report.refused_clearly += outcome == "refused"
                report.loaded_intact += outcome == "intact"
                continue
            if proc.returncode != 0:
                report.failures.append(f"a rerun failed: {stderr.decode(errors='replace')[-1500:]}")
                break
            report.reruns_completed += 1
            same = bundle_arrays(out) == reference and read_manifest(out)["build"]["status"] == "complete"
            report.identical_to_uninterrupted += same
            report.leftover_files += leftovers(out)
            break
    return report
