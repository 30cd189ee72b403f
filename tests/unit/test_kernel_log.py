"""The kernel-health gate: kernel-log.sh run for real against a fake dmesg, and the parsing."""

from __future__ import annotations

import os
import subprocess

from lab.checks import kernel_log
from lab.core.config import ROOT

DMESG = """\
[    0.024294] Speculative Return Stack Overflow: WARNING: See https://kernel.org/doc/srso.html
[   10.000000] before the span: BUG: kernel NULL pointer dereference, address: 0000000000000000
[  302.166453] tmpfs: Unknown parameter 'noswap'
[ 1100.786779] hrtimer: interrupt took 18732950 ns
[ 1203.500000] INFO: task dd:4242 blocked for more than 5 seconds.
[ 1203.500100]       Not tainted 6.1.0-50-amd64 #1 Debian 6.1.176-1
[ 1203.500200] Call Trace:
[ 1203.500300]  <TASK>
[ 1203.500400]  __schedule+0x34d/0x9e0
[ 1210.000000] WARNING: CPU: 1 PID: 77 at fs/inode.c:123 iput+0x1/0x2
[ 1210.100000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [java:900]
[ 1211.000000] rcu: INFO: rcu_preempt self-detected stall on CPU
"""


def run_script(tmp_path, since: str, dmesg: str = DMESG) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dmesg").write_text(f"#!/bin/sh\ncat {tmp_path / 'dmesg.txt'}\n")
    (bin_dir / "dmesg").chmod(0o755)
    (tmp_path / "dmesg.txt").write_text(dmesg)
    script = (ROOT / "lab" / "remote" / "scripts" / "kernel-log.sh").read_text()
    pattern = "|".join(kernel_log.PROBLEMS.values())
    res = subprocess.run(["bash", "-c", script, "kernel-log.sh", since, pattern, "3"],
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=10, check=True)
    return res.stdout


def test_the_span_keeps_only_problems_logged_since_it_opened_with_their_traces(tmp_path):
    found = kernel_log.parse(run_script(tmp_path, "1000.5"))
    assert [(p.kind, p.at) for p in found] == [
        ("hung task", 1203.5), ("warn", 1210.0), ("soft lockup", 1210.1), ("rcu stall", 1211.0)]
    assert found[0].line == "INFO: task dd:4242 blocked for more than 5 seconds."
    assert found[0].trace[:2] == ["      Not tainted 6.1.0-50-amd64 #1 Debian 6.1.176-1",
                                  "Call Trace:"]


def test_what_tcg_slowness_and_boot_print_is_not_a_problem(tmp_path):
    kinds = [p.kind for p in kernel_log.parse(run_script(tmp_path, "0"))]
    # The boot-time "...: WARNING: See ..." and "hrtimer: interrupt took" are not problems;
    # the NULL dereference at 10 s is, for a span that covers it.
    assert kinds == ["bug", "hung task", "warn", "soft lockup", "rcu stall"], kinds


def test_a_span_opened_after_the_last_problem_finds_nothing(tmp_path):
    assert kernel_log.parse(run_script(tmp_path, "1300")) == []


def test_the_failure_message_names_each_problem_and_says_when_the_host_was_shared():
    problems = kernel_log.parse(DMESG)
    message = kernel_log.failure_message(problems, shared_host=True)
    assert "kernel hung task at 1203.5s after boot: INFO: task dd:4242" in message
    assert "other tests ran on this lab host at the same time" in message
    assert "other tests" not in kernel_log.failure_message(problems, shared_host=False)
    assert "__schedule+0x34d/0x9e0" in kernel_log.report(problems)


def test_a_span_opened_before_the_lab_host_rebooted_covers_the_whole_new_boot(tmp_path):
    # This machine's uptime is far below the span's start: the host rebooted since it opened.
    kinds = [p.kind for p in kernel_log.parse(run_script(tmp_path, "999999999.5"))]
    assert kinds == ["bug", "hung task", "warn", "soft lockup", "rcu stall"], kinds


def test_the_gate_says_where_the_next_span_starts_after_the_last_line_it_read(tmp_path):
    """The next test's span starts after the last line this gate read (no round trip of its
    own, and no line counted in two spans); with an empty log, at the uptime."""
    def gate(out: str) -> kernel_log.Verdict:
        host = type("Host", (), {"run_script": lambda self, name, args, **kw: type(
            "Res", (), {"stdout": out})()})()
        return kernel_log.gate(host, kernel_log.Span(1000.5), ("hung task", "warn",
                               "soft lockup", "rcu stall"), shared_host=False)

    verdict = gate(run_script(tmp_path, "1000.5"))
    assert verdict.failure is None and len(verdict.described) == 4
    assert verdict.next_span == kernel_log.Span(1211.0)
    assert kernel_log.parse(run_script(tmp_path / "again", "1211.0")) == []
    (tmp_path / "empty").mkdir()
    empty = run_script(tmp_path / "empty", "1000.5", dmesg="")
    uptime = float(open("/proc/uptime").read().split()[0])
    assert 0 <= uptime - gate(empty).next_span.start < 60
