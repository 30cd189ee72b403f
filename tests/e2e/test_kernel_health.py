"""The kernel-health gate (lab/checks/kernel_log.py): a test during which the lab host's kernel
reports a problem fails, and its diagnostics keep the kernel's lines. Proved with a real hung
task (a writer's fsync blocked on a suspended device-mapper device, lab.faults.hung_task) in
an inner run, as a kernel-level bug would make one."""

from __future__ import annotations

import pytest
from test_infrastructure import inner_budget, inner_env

pytest_plugins = ["pytester"]

INNER = '''
from lab import faults
from lab.checks import kernel_log
from lab.core.wait import Pending, until


def test_a_hung_task_happens_during_this_test(lab_host, lab_config):
    span = kernel_log.open_span(lab_host)
    with faults.hung_task(lab_host, timeout_s=5):
        # The detector checks every timeout_s: the line comes 5-10 s after the read blocked.
        until(lambda: [p for p in kernel_log.problems_in(lab_host, span)
                       if p.kind == "hung task"] or Pending("no hung-task line yet"),
              lab_config.timeout("event"), "the kernel's hung-task report")
    # The body passes: only the gate, after it, can fail this test.
'''


@pytest.mark.exclusive  # a hung task and a short hung-task timeout are host-wide
@pytest.mark.kernel_problems_expected("hung task")  # the inner test's, in this span too
def test_the_gate_fails_a_test_whose_span_holds_a_kernel_problem_and_keeps_its_lines(
        pytester, monkeypatch, lab_host, lab_config):
    for key, value in inner_env(lab_config, lab_host, needs_driver=False).items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_hung=INNER)
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lab-reports",
                                           str(reports), timeout=inner_budget(lab_config))
    out = result.stdout.str()
    result.assert_outcomes(passed=1, errors=1)  # the body passed; the gate's teardown failed
    assert "the lab host's kernel reported 1 problem(s) during this test" in out, out
    assert "kernel hung task at" in out and "blocked for more than 5 seconds" in out, out
    kept = (reports / "diag" / "test_hung.py_test_a_hung_task_happens_during_this_test"
            / "kernel.txt").read_text()
    assert "INFO: task dd:" in kept and "blocked for more than 5 seconds" in kept, kept
    assert "Call Trace" in kept or "__schedule" in kept, kept  # the trace came with it
