"""After a test, its agent: record its task events, drain, stop, scan for leftovers, sweep.

Timed as the test's phases (drained, stopped, scanned). The diagnostics bundle is taken at the
last moment it can show the problem: before the agent stops when the drain fails (its log and
API are still there), before the sweep when the scan finds leftovers. Returns the problems
(leftovers in words, with their paths), which fail the test unless its body already failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lab.checks import janitor, leftovers, record
from lab.nomad.agent import NomadAgent
from lab.nomad.agent_pool import AgentPool


@contextmanager
def phase(phases: list, name: str) -> Iterator[None]:
    began = time.monotonic()
    try:
        yield
    finally:
        phases.append((name, time.monotonic() - began))


def agent_teardown(agent: NomadAgent, host: Any, pool: AgentPool, rec: record.Record,
                   bundle: Callable[[NomadAgent | None], Any], own_traces_only: bool,
                   jobs: Any = None, unjournaled_faults: bool = True,
                   faults_since: float | None = None) -> list[str]:
    """own_traces_only: other tests' agents run on the host (xdist): scan this agent's.
    unjournaled_faults: a test since the last fault scan may have injected faults this
    process's journal does not know (an exclusive one: an inner run's); faults_since: when the
    last fault scan ran (default: this test's start)."""
    phases = rec.phases
    for run in getattr(jobs, "runs", []):
        phases.extend((f"job {run.id.rsplit('-', 1)[-1]} {what}", secs)
                      for what, secs in run.milestones)
    # Before the drain purges the jobs and the client GCs their allocations.
    rec.task_events = rec.part("task_events", lambda: record.task_events(
        record.allocations(agent.api)))
    with phase(phases, "drained"):
        problems = agent.drain()
    if problems:
        bundle(agent)
    with phase(phases, "stopped"):
        agent.stop(check=False, graceful=bool(problems))
    # Fault traces come only from the lab's own faults (lab.faults), each in the journal before
    # it is injected: if none was journaled since the last fault scan, and no test since then
    # ran an inner run, none can be on the host. The scan is ~3 s of process starts under TCG,
    # so it runs only where it can find one (also one left by a test without an agent).
    faults_possible = unjournaled_faults or bool(
        _faults_since(rec.started_at if faults_since is None else faults_since))
    with phase(phases, "scanned"):
        if own_traces_only:
            found = janitor.scan_agent(host, agent.id, agent.api.seen_alloc_ids,
                                       include_faults=faults_possible)
        else:
            found = janitor.scan(host, include_faults=faults_possible,
                                 exclude_agents=pool.live_ids())
    rec.set_leftovers(found, agent.id)
    if found:
        bundle(None)
        pool.drop_ahead()  # the sweep below removes every agent on the host
        janitor.sweep(host)
        problems.append("left on the lab host after the test:\n"
                        + leftovers.describe_text(found, agent.id))
    return problems


def _faults_since(started_at: float) -> list:
    from lab import faults

    return record.fault_entries(faults.JOURNAL.records(), started_at)
