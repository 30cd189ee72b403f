"""The run's report people can open: reports/index.html, one static page (no script).

On top, the lab environment (target, accel, kernel, crun, Java, Nomad, plugin, run ids); then
each pass of pytest and each of its tests: outcome, duration, phases, links into its
diagnostics bundle (relative, so the reports/ folder can be copied or served as it is) and its
record (lab.checks.record), folded in a <details>.

Who writes it: the pytest process that saw every test's report, i.e. the only process of a
serial run, or the xdist controller (the workers send each test's record along with its
teardown report). Several pytest passes make one report when they share a report id
(`--lab-report-id`: `./invoke test -n N` gives its parallel pass and its exclusive pass the
same one): each pass appends itself to reports/records/<report id>.json and renders
index.html from every pass in it. A run with a new id starts a new file; the newest KEEP files
are kept.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

from lab.checks.record import render_text

KEEP = 20
ENV_ORDER = ("target", "accel", "timeout_scale", "os", "kernel", "cgroup_mode",
             "cgroup_controllers", "box", "crun", "java", "nomad", "plugin")
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 12px; }
.passed { color: #17662b; } .failed, .error { color: #b00020; font-weight: bold; }
.skipped, .not-run { color: #7a5b00; }
details.test { border-left: 4px solid #ccc; margin: .4em 0; padding-left: .6em; }
details.test.failed, details.test.error { border-color: #b00020; }
summary { cursor: pointer; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _records_file(reports_dir: Path, report_id: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", report_id).strip("_.") or "run"
    return reports_dir / "records" / f"{name}.json"


def add_pass(reports_dir: Path, report_id: str, this_pass: dict[str, Any]) -> dict[str, Any]:
    """Append `this_pass` to the run's records file (a new file for a new report id) and
    return the whole run: {"report_id", "passes": [...]}."""
    path = _records_file(reports_dir, report_id)
    run: dict[str, Any] = {"report_id": report_id, "passes": []}
    try:
        found = json.loads(path.read_text())
        if found.get("report_id") == report_id:
            run = found
    except (OSError, ValueError):
        pass
    run["passes"].append(this_pass)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run, indent=1, default=str))
    tmp.replace(path)
    older = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)[:-KEEP]
    for old in older:
        old.unlink(missing_ok=True)
    return run


def write_index(reports_dir: Path, run: dict[str, Any]) -> Path:
    out = reports_dir / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(render(run, reports_dir))
    tmp.replace(out)
    return out


class RunReport:
    """The records one pytest process receives (its own, or its xdist workers'), written as
    one pass of the run."""

    def __init__(self, args: str):
        self.args, self.started_at = args, time.time()
        self.records: list[dict[str, Any]] = []
        self.envs: dict[tuple, dict[str, Any]] = {}  # (run id, worker) -> environment
        self.written: Path | None = None
        self.error: str | None = None

    def add(self, record: dict[str, Any], env: dict[str, Any] | None = None) -> None:
        self.records.append(record)
        if env:  # a later test's may know more (the facts come with the first agent)
            key = (env.get("run_id"), env.get("worker"))
            self.envs[key] = {**self.envs.get(key, {}), **env}

    @property
    def used_the_lab(self) -> bool:
        return any(r.get("lab") for r in self.records)

    def write(self, reports_dir: Path, report_id: str, exitstatus: int) -> Path:
        this_pass = {"args": self.args, "started_at": self.started_at,
                     "duration": time.time() - self.started_at, "exitstatus": exitstatus,
                     "envs": list(self.envs.values()), "records": self.records}
        self.written = write_index(reports_dir, add_pass(reports_dir, report_id, this_pass))
        return self.written


# -- rendering -------------------------------------------------------------------------------
def _counts(records: list[dict]) -> str:
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.get("outcome", "?")] = counts.get(rec.get("outcome", "?"), 0) + 1
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no tests"


def _environment(run: dict[str, Any]) -> str:
    envs = [env for p in run["passes"] for env in p.get("envs") or []]
    facts: dict[str, Any] = {}
    for env in envs:  # the first value seen of each fact (every pass ran on one lab host)
        for key, value in env.items():
            if key not in ("run_id", "worker") and value not in (None, ""):
                facts.setdefault(key, value)
    keys = [k for k in ENV_ORDER if k in facts] + sorted(set(facts) - set(ENV_ORDER))
    rows = [(k, facts[k]) for k in keys]
    run_ids = sorted({f"{e['run_id']}" + (f" ({e['worker']})" if e.get("worker") else "")
                      for e in envs if e.get("run_id")})
    rows.append(("run ids", ", ".join(run_ids) or "-"))
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _links(record: dict[str, Any], base: Path) -> str:
    bundle = record.get("bundle")
    if not bundle:
        return ""
    folder = Path(bundle)
    rel = os.path.relpath(folder, base)
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    first = [n for n in ("record.txt", "record.json") if n in names]
    links = [f'<a href="{_esc(urllib.parse.quote(f"{rel}/{n}"))}">{_esc(n)}</a>'
             for n in first + [n for n in names if n not in first]]
    return (f'bundle <a href="{_esc(urllib.parse.quote(rel + "/"))}">{_esc(rel)}/</a>: '
            + (" ".join(links) or "(empty)"))


def _phases(record: dict[str, Any]) -> str:
    return " | ".join(f"{n} {s:.1f}s" for n, s in record.get("phases") or [])


def _test(record: dict[str, Any], anchor: str, base: Path) -> str:
    outcome = record.get("outcome", "?")
    css = re.sub(r"[^a-z-]", "-", outcome)
    opened = " open" if outcome in ("failed", "error") else ""
    reports = record.get("reports") or {}
    per_phase = ", ".join(f"{w} {r['outcome']} {r['duration']:.1f}s" for w, r in reports.items())
    failures = "".join(f"<p>failure in {_esc(w)}:</p><pre>{_esc(r['error'])}</pre>"
                       for w, r in reports.items() if r.get("error"))
    links = _links(record, base)
    return (f'<details class="test {css}" id="{anchor}"{opened}><summary>'
            f'<span class="{css}">{_esc(outcome)}</span> {_esc(record["test"])} '
            f'({record.get("duration", 0):.1f}s)</summary>'
            f"<p>{_esc(per_phase)}</p>"
            + (f"<p>phases: {_esc(_phases(record))}</p>" if record.get("phases") else "")
            + (f"<p>{links}</p>" if links else "")
            + failures
            + f"<details><summary>record</summary><pre>{_esc(render_text(record))}</pre>"
              "</details></details>")


def _pass(index: int, this_pass: dict[str, Any], base: Path) -> str:
    records = this_pass.get("records") or []
    began = this_pass.get("started_at")
    head = (f"<h2>pass {index}: <code>{_esc(this_pass.get('args', ''))}</code></h2>"
            f"<p>{_esc(_counts(records))}; began "
            f"{_esc(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(began)) if began else '-')}"
            f", took {this_pass.get('duration', 0):.1f}s, exit status "
            f"{_esc(this_pass.get('exitstatus'))}</p>")
    rows = []
    for i, rec in enumerate(records):
        outcome = rec.get("outcome", "?")
        css = re.sub(r"[^a-z-]", "-", outcome)
        bundle = ""
        if rec.get("bundle"):
            rel = os.path.relpath(rec["bundle"], base)
            bundle = f'<a href="{_esc(urllib.parse.quote(rel + "/record.txt"))}">record.txt</a>'
        rows.append(f'<tr><td class="{css}">{_esc(outcome)}</td>'
                    f'<td><a href="#p{index}-t{i}">{_esc(rec["test"])}</a></td>'
                    f'<td>{rec.get("duration", 0):.1f}s</td><td>{_esc(_phases(rec))}</td>'
                    f"<td>{bundle}</td></tr>")
    table = ("<table><tr><th>outcome</th><th>test</th><th>duration</th><th>phases</th>"
             "<th>bundle</th></tr>" + "".join(rows) + "</table>") if rows else ""
    return head + table + "".join(_test(rec, f"p{index}-t{i}", base)
                                  for i, rec in enumerate(records))


def render(run: dict[str, Any], base: Path) -> str:
    """The page; links are relative to `base`, the folder index.html is written to."""
    records = [rec for p in run["passes"] for rec in p.get("records") or []]
    title = f"java-crun lab report {run['report_id']}"
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p>{_esc(_counts(records))} in {len(run['passes'])} "
            f"pass(es); written {_esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"
            f"<h2>lab environment</h2>{_environment(run)}"
            + "".join(_pass(i, p, base) for i, p in enumerate(run["passes"], 1))
            + "</body></html>\n")
