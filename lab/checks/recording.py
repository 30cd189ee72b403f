"""The steps of recording a test, as the pytest plugin takes them (no pytest in here).

    take_agent(...)                the test's agent, recorded even when it fails to start
    bundle(rec, out, host, agent)  the diagnostics bundle, collected once per test: when the
                                   body fails (agent up), setup fails (whatever the host
                                   shows), the drain fails (before the agent stops) or the
                                   scan finds leftovers (before the sweep removes them)
    finish(rec, out, artifacts)    after teardown: the faults and artifact requests of the
                                   test, and record.json/record.txt into the bundle if any
                                   phase failed; returns sections for the pytest report
    environment(...)               the facts index.html shows on top
Every step is best effort: what cannot be gathered is written into the record's `errors`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.checks import diag, record


def take_agent(pool: Any, key: str, options: Any, rec: record.Record,
               made: dict[str, Any]) -> tuple[Any, float]:
    """The test's agent from the pool (lab.nomad.agent_pool), into the record; for one that
    fails to start, its id, ports and start-up timeline so far (`made`: test id -> the agent
    the pool made for it)."""
    began = time.monotonic()
    try:
        agent, waited = pool.take(key, options)
    except BaseException:
        rec.phases.append(("agent failed", time.monotonic() - began))
        failed = made.pop(key, None)
        if failed is not None:
            rec.agent = rec.part("agent", lambda: record.agent_info(failed))
        raise
    made.pop(key, None)
    rec.agent = rec.part("agent", lambda: record.agent_info(agent, waited))
    rec.phases.append(("agent ready", waited))
    return agent, waited


def bundle(rec: record.Record, out: Path, host: Any, agent: Any = None) -> Path:
    """Collect the diagnostics bundle into `out` unless this test's is already there (a test
    that does not use the lab, or whose lab host never came up, gets its record only)."""
    if rec.bundle is None and rec.lab and host is not None:
        _fresh(rec, out)
        started = time.monotonic()
        try:
            diag.collect(host, agent, out)
            rec.phases.append(("diagnostics collected", time.monotonic() - started))
        except Exception as exc:  # noqa: BLE001 - diagnostics must never mask the real failure
            rec.errors["bundle"] = f"could not collect diagnostics: {type(exc).__name__}: {exc}"
    _fresh(rec, out)
    return out


def _fresh(rec: record.Record, out: Path) -> None:
    """The first time this test writes its bundle: none of an earlier run's files stay."""
    if rec.bundle is None:
        shutil.rmtree(out, ignore_errors=True)
        rec.bundle = str(out)


def summary(out: Path) -> str:
    """The few lines a failed test's report shows about its bundle."""
    try:
        text = diag.summary(out)
    except Exception as exc:  # noqa: BLE001
        text = f"diagnostics bundle: {out} (unreadable: {exc})"
    if (out / "record.txt").exists():
        text += f"\n  record: {out / 'record.txt'}"
    return text


def finish(rec: record.Record, out: Path, artifacts: Any = None) -> list[tuple[str, str]]:
    """The record's last parts, and the record into the bundle if a phase failed."""
    if rec.lab:
        from lab import faults

        rec.faults = rec.part("faults", lambda: record.fault_entries(
            faults.JOURNAL.records(), rec.started_at), default=[])
    if artifacts is not None:
        rec.artifact_requests = rec.part("artifact_requests", lambda: record.request_entries(
            artifacts.requests(), rec.started_at))
    if not rec.failed:
        return []
    _fresh(rec, out)
    try:
        record.write(rec.to_dict(), out)
        if rec.kernel_traces:
            (out / "kernel.txt").write_text(rec.kernel_traces)
        if rec.serial:
            (out / "serial.txt").write_text(rec.serial)
    except Exception as exc:  # noqa: BLE001 - a record must not mask the failure
        return [("lab record", f"could not write the record to {out}: {exc}")]
    return [("lab diagnostics", summary(out))]


def environment(config: Callable[[], Any], worker: str | None,
                facts: dict[str, str] | None) -> dict[str, Any]:
    """run id, worker, target, accel, timeout scale and the lab host's facts."""
    env: dict[str, Any] = {"run_id": None, "worker": worker}
    try:
        cfg = config()
        env.update(run_id=cfg.run_id, target=cfg.target, accel=cfg.effective_accel(),
                   timeout_scale=cfg.scale)
    except Exception as exc:  # noqa: BLE001 - a broken config is reported elsewhere
        env["config_error"] = str(exc)
    return {**env, **(facts or {})}
