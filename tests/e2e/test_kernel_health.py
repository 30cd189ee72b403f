"""The kernel-health gate (lab/checks/kernel_log.py): a test during which the lab host's kernel
reports a problem fails, and its diagnostics keep the kernel's lines. Proved with a real hung
task (a writer's fsync blocked on a suspended device-mapper device, lab.faults.hung_task) in
an inner run, as a kernel-level bug would make one. And the guest watch
(lab/checks/guest_watch.py): a real kernel panic in an inner run fails that test with the
serial console's lines, the VM restarts, and the inner run's next test runs a job on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_infrastructure import inner_budget, inner_env

HOME = Path.home()  # at import: pytester changes HOME while its test runs

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


PANIC_INNER = '''
import os


def test_the_guest_kernel_panics(lab_host, artifacts):
    # The kernel's own crash path (sysrq "c"), as a kernel bug would take it: the command
    # never returns; the guest watch cuts it when the panic shows on the serial console.
    # (`artifacts`: the artifact server's tunnel exists before the panic, and the next test's
    # job proves that it came back with the restarted host.)
    lab_host.sudo("echo c > /proc/sysrq-trigger")


def test_the_run_goes_on_on_the_restarted_lab_host(lab_host, jobs):
    boot_id = lab_host.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert boot_id != os.environ["BOOT_ID_BEFORE"], "the lab host was not restarted"
    run = jobs.run("hello", args=["after the panic"])
    run.wait_dead()
    assert run.exit_codes() == [0]
    assert "arg[0]=after the panic" in run.logs()
'''


@pytest.mark.exclusive  # the lab host panics and restarts under everybody
@pytest.mark.guest_restart_expected  # the inner run's guest panics: this run waits for it
def test_a_guest_kernel_panic_fails_its_test_with_the_console_and_the_run_goes_on(
        pytester, monkeypatch, lab_host, lab_config):
    if not lab_config.is_vagrant:
        pytest.skip("restarting a lost lab host needs the Vagrant VM; an ssh:// host that "
                    "panics is reported and no longer used (lab/pytest_plugin/guest.py)")
    env = inner_env(lab_config, lab_host)
    for key in ("LAB_TARGET", "LAB_SSH_KEY"):  # the inner run's target is the VM itself
        env.pop(key, None)
    # pytester gives the inner run a HOME of its own; the VM's key and Vagrant's boxes are
    # in ours (the inner run restarts the VM with them).
    env["HOME"] = str(HOME)
    boot_id = lab_host.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    for key, value in {**env, "BOOT_ID_BEFORE": boot_id}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LAB_TARGET", raising=False)
    monkeypatch.delenv("LAB_TARGETS", raising=False)
    pytester.makepyfile(test_panic=PANIC_INNER)
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--lab-reports", str(reports),
        timeout=inner_budget(lab_config) + lab_config.timeout("vm_up"))
    out = result.stdout.str()
    result.assert_outcomes(passed=1, failed=1)
    assert "declared lost: its kernel panicked:" in out, out
    assert "Kernel panic - not syncing: sysrq triggered crash" in out, out
    assert "the lab host is back after" in out and "the run goes on" in out, out
    bundle = reports / "diag" / "test_panic.py_test_the_guest_kernel_panics"
    serial = (bundle / "serial.txt").read_text()
    assert "Kernel panic - not syncing: sysrq triggered crash" in serial, serial
    record = json.loads((bundle / "record.json").read_text())
    assert "its kernel panicked" in record["lost"], record
    # Noticed on the serial console within seconds: the test's body ended (cut by the
    # watch) long before the SSH-silence limit, the slower of the watch's two signals.
    took = record["reports"]["call"]["duration"]
    print(f"the panic test's body took {took:.1f}s (the silence limit: "
          f"{lab_config.timeout('guest_silent'):.0f}s)")
    assert took < lab_config.timeout("guest_silent"), record["reports"]
    assert lab_host.run("cat /proc/sys/kernel/random/boot_id").stdout.strip() != boot_id
