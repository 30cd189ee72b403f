"""`invoke matrix`: the suite (or a -k/-m subset) on several labs, one table of the results.

Each lab (lab/provision/labs.py: release x kernel x cgroup mode) is brought up (`lab.up`), the
tests run on it holding its lease, its results go to `reports/junit-<lab id>.xml`, and a lab
the matrix created is destroyed afterwards when asked (`destroy_after`). Labs run one after
another (these machines have 2 cores; two TCG guests at once slow both to a crawl). The table
has one row per test and one column per lab; a test that fails on some labs and passes on
others is marked, since that is what a kernel- or release-specific bug looks like.
"""

from __future__ import annotations

import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.provision.labs import DEFAULT_MATRIX, LabSpec

Out = Callable[[str], None]
MARK = "<<"  # in front of a row whose test fails on some labs only


@dataclass
class Cell:
    outcome: str          # pass, fail, skip, xfail (the known bug of an xfail marker showed)
    seconds: float = 0.0
    message: str = ""

    def render(self) -> str:
        word = {"pass": "pass", "fail": "FAIL", "skip": "skip", "xfail": "xfail"}[self.outcome]
        return f"{word} {self.seconds:.1f}s" if self.outcome != "skip" else word


@dataclass
class LabRun:
    spec: LabSpec
    junit: Path | None = None
    skipped: str = ""      # why the lab was not run (refused); its column is left out
    error: str = ""        # the lab could not be brought up or pytest could not run
    up_seconds: float = 0.0
    test_seconds: float = 0.0
    rc: int | None = None
    cells: dict[str, Cell] = field(default_factory=dict)


def parse_labs(text: str | None) -> list[LabSpec]:
    """`bullseye,bookworm-v1,trixie` (default: the issue's five labs)."""
    names = [t for t in (text.split(",") if text else DEFAULT_MATRIX) if t.strip()]
    specs = [LabSpec.parse(t) for t in names]
    seen: set[str] = set()
    return [s for s in specs if not (s.id in seen or seen.add(s.id))]


# ---- JUnit -> cells --------------------------------------------------------------------------

def test_key(testcase: ET.Element) -> str:
    module = testcase.get("classname", "").removeprefix("tests.e2e.")
    return f"{module}::{testcase.get('name', '?')}" if module else testcase.get("name", "?")


def read_junit(path: Path) -> dict[str, Cell]:
    """One Cell per testcase of a pytest JUnit XML file, in file order."""
    cells: dict[str, Cell] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        seconds = float(case.get("time") or 0)
        failed = case.find("failure")
        if failed is None:
            failed = case.find("error")
        skipped = case.find("skipped")
        if failed is not None:
            cell = Cell("fail", seconds, (failed.get("message") or "")[:200])
        elif skipped is not None:
            # pytest writes an expected failure as a skip of type pytest.xfail: it ran.
            outcome = "xfail" if skipped.get("type") == "pytest.xfail" else "skip"
            cell = Cell(outcome, seconds, (skipped.get("message") or "")[:200])
        else:
            cell = Cell("pass", seconds)
        key = test_key(case)
        # A test that passed its call but failed its teardown appears twice: fail wins.
        if key not in cells or cell.outcome == "fail":
            cells[key] = cell
    return cells


# ---- the table -------------------------------------------------------------------------------

def stands_out(cells: Sequence[Cell | None]) -> bool:
    """Fails on some labs and passes (or shows its known bug) on at least one other: a
    lab-specific failure."""
    outcomes = {c.outcome for c in cells if c is not None}
    return "fail" in outcomes and bool(outcomes & {"pass", "xfail"})


def render_table(runs: Sequence[LabRun]) -> str:
    columns = [r for r in runs if not r.skipped]
    rows: list[str] = []
    for run in columns:
        rows += [k for k in run.cells if k not in rows]
    header = ["", "test", *[r.spec.id for r in columns]]
    body = []
    for key in rows:
        cells = [r.cells.get(key) for r in columns]
        body.append([MARK if stands_out(cells) else "", key,
                     *[c.render() if c else ("-" if not r.error else "n/a")
                       for c, r in zip(cells, columns, strict=True)]])
    if not body:
        body.append(["", "(no test ran)", *["-" for _ in columns]])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = lambda row: "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
    out = [fmt(header), line, *[fmt(row) for row in body], line]
    for run in runs:
        out.append(f"{run.spec.id}: " + summarize(run))
    marked = [row[1] for row in body if row[0] == MARK]
    if marked:
        out.append(f"{MARK} fails on some labs and passes on others: " + ", ".join(marked))
    return "\n".join(out)


def summarize(run: LabRun) -> str:
    if run.skipped:
        return f"not run: {run.skipped}"
    counts = {o: sum(c.outcome == o for c in run.cells.values())
              for o in ("pass", "fail", "skip", "xfail")}
    text = (f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
            + (f", {counts['xfail']} xfailed" if counts["xfail"] else "")
            + f"; up {run.up_seconds:.0f}s, tests {run.test_seconds:.0f}s")
    if run.junit:
        text += f"; {run.junit}"
    if run.error:
        text += f"; ERROR: {run.error}"
    return text


# ---- running ---------------------------------------------------------------------------------

def pytest_args(k: str | None, m: str | None, junit: Path, extra: Iterable[str] = ()) -> list[str]:
    args = ["tests/e2e", f"--junitxml={junit}", *extra]
    args += ["-k", k] if k else []
    args += ["-m", m] if m else []
    return args


def run_matrix(specs: Sequence[LabSpec], *, k: str | None = None, m: str | None = None,
               extra: Iterable[str] = (), destroy_after: bool = False, out: Out = print,
               base_env: dict[str, str] | None = None) -> list[LabRun]:
    from lab.core.subrun import run_forwarding_interrupts
    from lab.provision import target
    from lab.provision.vm import VagrantVM
    from lab.workflows.up import up as lab_up

    base_env = dict(os.environ if base_env is None else base_env)
    runs: list[LabRun] = []
    for spec in specs:
        run = LabRun(spec)
        runs.append(run)
        why = spec.refusal()
        if why:
            run.skipped = why
            out(f"matrix: {spec.id}: skipped: {why}")
            continue
        env = {**base_env, **spec.settings()}
        config = LabConfig.load(env=env)
        vm = VagrantVM(config, out=out)
        created = vm.domain_state() == "not created"
        run.junit = config.reports_dir / f"junit-{spec.id}.xml"
        run.junit.unlink(missing_ok=True)
        out(f"matrix: {spec.id}: {spec.describe()}, VM {vm.name}"
            f"{' (new)' if created else ''}")
        try:
            started = time.monotonic()
            with _environ(spec.settings()):
                lab_up(config, out=out)
                run.up_seconds = time.monotonic() - started
                started = time.monotonic()
                with target.leased(config, f"invoke matrix ({spec.id})", out):
                    run.rc = run_forwarding_interrupts(
                        [sys.executable, "-m", "pytest",
                         *pytest_args(k, m, run.junit, extra)],
                        env={**os.environ}, cwd=config.root)
                run.test_seconds = time.monotonic() - started
        except LabError as exc:
            run.error = str(exc).splitlines()[0][:300]
            out(f"matrix: {spec.id}: {exc}")
        if run.junit.exists():
            run.cells = read_junit(run.junit)
        elif not run.error:
            run.error = f"pytest exited {run.rc} without writing {run.junit}"
        out(f"matrix: {spec.id}: {summarize(run)}")
        if destroy_after and created:
            out(f"matrix: {spec.id}: destroying {vm.name} (created by this run)")
            vm.destroy()
    return runs


class _environ:
    """Set LAB_* lab settings in os.environ for the block (the lease and pytest inherit them)."""

    def __init__(self, values: dict[str, str]):
        self.values, self.saved = values, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
