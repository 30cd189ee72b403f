"""The kernel-health gate: a test fails when the lab host's kernel reported a problem during it.

Each test's span is [its start, its end] in the lab host's uptime. The kernel log of that span
is read in one round trip (lab/remote/scripts/kernel-log.sh); a WARN, BUG, Oops, panic, hung
task, soft or hard lockup or RCU stall fails the test and goes into its diagnostics with the
lines that follow it (the call trace).

What TCG's slowness itself produces, measured on this project's 2-core TCG lab host
(bookworm, 6.1): `hrtimer: interrupt took <n> ns` (a timer interrupt handled late) and
nothing of the classes above in hours of suite runs. That line is not a problem class here,
so it never fails a test; an RCU stall or a soft lockup under TCG would, and is reported,
not hidden: it is exactly the kind of thing a kernel-level bug hunt must see.

When tests run at once on one host, a line fails every test whose span it falls in, and the
message says that it may be another test's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab.remote.host import LabHost

# kind -> what the kernel prints for it; the first matching kind names a line.
PROBLEMS = {
    "panic": r"Kernel panic - not syncing",
    "soft lockup": r"BUG: soft lockup - CPU#",
    "hard lockup": r"Watchdog detected hard LOCKUP",
    "hung task": r"INFO: task \S+ blocked for more than [0-9]+ seconds",
    "rcu stall": r"rcu: INFO: rcu_[a-z]+ (self-)?detected stalls?|rcu_[a-z]+ detected stalls",
    "oops": r"Oops: |general protection fault",
    "bug": r"BUG: ",
    "warn": r"WARNING: CPU: [0-9]+ PID: [0-9]+",
}
CONTEXT_LINES = 20  # of call trace kept after each problem line
TIMESTAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?")


@dataclass
class KernelProblem:
    kind: str
    at: float  # seconds since the lab host booted
    line: str
    trace: list[str]

    def describe(self) -> str:
        return f"kernel {self.kind} at {self.at:.1f}s after boot: {self.line}"


@dataclass
class Span:
    """One test's span of the kernel log, opened at `start` (the lab host's uptime)."""

    start: float


def open_span(host: LabHost) -> Span:
    return Span(float(host.run("cut -d' ' -f1 /proc/uptime").stdout.split()[0]))


def problems_in(host: LabHost, span: Span) -> list[KernelProblem]:
    """The kernel problems logged since the span opened (one round trip)."""
    return read(host, span)[0]


def read(host: LabHost, span: Span) -> tuple[list[KernelProblem], float | None]:
    """The kernel problems logged since the span opened, and where the next span starts
    (after the last line read: no round trip of its own, and no line in two spans)."""
    res = host.run_script("kernel-log.sh", [f"{span.start:.6f}", "|".join(PROBLEMS.values()),
                                            CONTEXT_LINES])
    start = next((line.split()[1] for line in res.stdout.splitlines()
                  if line.startswith("next ")), None)
    try:
        return parse(res.stdout), float(start) if start else None
    except ValueError:
        return parse(res.stdout), None


def parse(text: str) -> list[KernelProblem]:
    """kernel-log.sh's output -> one KernelProblem per problem line, with its trace."""
    found: list[KernelProblem] = []
    for line in text.splitlines():
        if line.startswith("next ") or line == "--":
            continue
        stamp = TIMESTAMP.match(line)
        message = line[stamp.end():] if stamp else line
        kind = next((k for k, pattern in PROBLEMS.items() if re.search(pattern, message)), None)
        if kind and stamp:
            found.append(KernelProblem(kind, float(stamp.group(1)), message, []))
        elif found:
            found[-1].trace.append(message)
    return found


def failure_message(problems: list[KernelProblem], shared_host: bool) -> str:
    lines = [f"the lab host's kernel reported {len(problems)} problem(s) during this test:"]
    lines += [f"  {p.describe()}" for p in problems]
    if shared_host:
        lines.append("  (other tests ran on this lab host at the same time: a line may come "
                     "from one of them; it fails every test whose span it falls in)")
    lines.append("  (a test's span of the kernel log runs from the previous test's kernel "
                 "check in this process, or from its own start, to its end)")
    lines.append("the lines and their call traces are in the test's diagnostics bundle "
                 "(kernel.txt)")
    return "\n".join(lines)


def report(problems: list[KernelProblem]) -> str:
    """For the diagnostics bundle: each problem with its call trace."""
    return "\n\n".join("\n".join([p.describe(), *("    " + t for t in p.trace)])
                       for p in problems)


@dataclass
class Verdict:
    """A closed span: every problem described (for the test's record); the failure message,
    or None when no problem other than the expected kinds was logged; the lines and call
    traces of a failure (kernel.txt in the test's bundle); where the next span starts."""

    described: list[str]
    failure: str | None
    traces: str | None
    next_span: Span | None


def gate(host: LabHost, span: Span, expected: tuple[str, ...], shared_host: bool) -> Verdict:
    """Close a test's span."""
    problems, now = read(host, span)
    next_span = Span(now) if now is not None else None
    failing = [p for p in problems if p.kind not in expected]
    if not failing:
        return Verdict([p.describe() for p in problems], None, None, next_span)
    return Verdict([p.describe() for p in problems], failure_message(failing, shared_host),
                   report(problems) + "\n", next_span)
