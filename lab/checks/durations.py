"""Each test's duration in earlier runs, to balance the next parallel run.

After a run, the process that sees every report (the session, or the xdist controller) merges
each test's time (set-up, body and teardown) into `<checkout>/.lab/durations.json`. A parallel
pass (`./invoke test -n N`) then collects its tests longest first, so the long tests start early
and the run does not end with one worker still busy on a long test while the others are idle
(LPT scheduling). A test without a recorded time counts as the median of the known ones.

pytest-xdist's load scheduler hands each worker two consecutive tests first, then one at a time
in order as workers free up (with `--maxschedchunk=1`, which the lab sets): `for_workers` pairs
the longest with the shortest of those first two rounds, so no worker starts with the two
longest tests.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

FILE_NAME = "durations.json"

T = TypeVar("T")


def load(path: Path) -> dict[str, float]:
    """The recorded durations; none when the file is missing or unreadable (a first run, or a
    file cut short by a killed run: balancing is an optimisation, never a reason to fail)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}


def save(path: Path, measured: Mapping[str, float]) -> None:
    """Merge this run's durations into the file: tests that did not run keep theirs."""
    if not measured:
        return
    merged = {**load(path), **{k: round(v, 2) for k, v in measured.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a parallel reader never sees half a file


def longest_first(items: Iterable[T], durations: Mapping[str, float],
                  key: Callable[[T], str]) -> list[T]:
    """items, longest recorded duration first; unknown ones as the median; ties keep their
    order (the same on every xdist worker, which xdist requires)."""
    items = list(items)
    known = [durations[key(i)] for i in items if key(i) in durations]
    default = statistics.median(known) if known else 0.0
    return sorted(items, key=lambda i: -durations.get(key(i), default))


def for_workers(ordered: list[T], workers: int) -> list[T]:
    """ordered (longest first) rearranged for `workers` xdist workers that each get two
    consecutive tests first: worker k gets the k-th longest and the k-th shortest of the first
    2 * workers."""
    head = 2 * workers
    if workers < 2 or len(ordered) < head:
        return list(ordered)
    paired = [t for k in range(workers) for t in (ordered[k], ordered[head - 1 - k])]
    return paired + list(ordered[head:])


class Recorder:
    """Sums each test's phase durations from its reports; keeps the tests whose body ran (a
    skipped test's few milliseconds say nothing about its cost where it runs)."""

    def __init__(self) -> None:
        self._total: dict[str, float] = {}
        self._ran: set[str] = set()

    def add(self, nodeid: str, when: str, outcome: str, duration: float) -> None:
        self._total[nodeid] = self._total.get(nodeid, 0.0) + duration
        if when == "call" and outcome in ("passed", "failed"):
            self._ran.add(nodeid)

    def measured(self) -> dict[str, float]:
        return {nodeid: secs for nodeid, secs in self._total.items() if nodeid in self._ran}
