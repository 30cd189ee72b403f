"""subrun: an interrupted parent waits for its child's own clean-up instead of killing it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lab.core.errors import LabTimeout
from lab.core.subrun import lines_until_deadline

CHILD = textwrap.dedent("""
    import signal, sys, time
    def cleanup(*_):
        time.sleep(0.5)  # a teardown that takes a while
        print("child cleaned up", flush=True)
        sys.exit(2)
    signal.signal(signal.SIGINT, cleanup)
    print("child ready", flush=True)
    time.sleep(30)
""")

PARENT = textwrap.dedent("""
    import sys
    from lab.core.subrun import run_forwarding_interrupts
    print("parent rc", run_forwarding_interrupts([sys.executable, "-c", sys.argv[1]]),
          flush=True)
""")


def _default_sigint() -> None:
    # A run started in the background (`cmd &` in a script, as CI may) inherits SIGINT
    # ignored, and Python then raises no KeyboardInterrupt at all: the parent would never
    # forward it (this test timed out that way, run in the background). A user's terminal
    # gives its foreground job the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_to_the_parent_alone_reaches_the_child_and_its_clean_up_finishes(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                              preexec_fn=_default_sigint)
    assert parent.stdout.readline().strip() == "child ready"
    parent.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, _ = parent.communicate(timeout=20)
    assert "child cleaned up" in out, out
    assert "parent rc 2" in out, "the parent returns the child's own exit code"
    assert time.monotonic() - started >= 0.4, "the parent waited for the child's clean-up"


def test_sigint_arriving_while_the_child_is_being_started_is_forwarded_once_it_exists(
        monkeypatch):
    """Under load the interrupt can come before Popen() returns (the child already runs):
    it must still reach the child, whose clean-up then decides the exit code."""
    import os

    from lab.core import subrun

    real_popen = subprocess.Popen

    def popen_interrupted_meanwhile(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        assert proc.stdout.readline().strip() == "child ready"
        os.kill(os.getpid(), signal.SIGINT)  # handled before Popen() returns to its caller
        return proc

    monkeypatch.setattr(subrun.subprocess, "Popen", popen_interrupted_meanwhile)
    rc = subrun.run_forwarding_interrupts([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                                          text=True, start_new_session=True)
    assert rc == 2, "the child's clean-up ran: SIGINT reached it"


def test_lines_until_deadline_yields_the_output_of_a_command_that_ends():
    proc = subprocess.Popen(["sh", "-c", "echo one; echo two"], stdout=subprocess.PIPE,
                            text=True)
    assert list(lines_until_deadline(proc, 10, "echo")) == ["one\n", "two\n"]


def test_a_silent_command_past_its_deadline_is_killed_and_named_with_its_last_line():
    proc = subprocess.Popen(["sh", "-c", "echo started; exec sleep 60"],
                            stdout=subprocess.PIPE, text=True)
    with pytest.raises(LabTimeout) as info:
        list(lines_until_deadline(proc, 0.5, "debootstrap", hint="read the log"))
    assert proc.returncode is not None, "the command must be killed, not left running"
    assert "waiting for debootstrap" in str(info.value)
    assert "last seen: started" in str(info.value) and "read the log" in str(info.value)


def _gone(pid: int, within: float = 5.0) -> bool:
    """pid has exited (gone, or a zombie that init has yet to reap)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


# The step's command and, under it, a program that it waits for (debootstrap under the box
# build script): the program says its pid, then runs until stopped.
TREE = ["sh", "-c", f"{sys.executable} -c 'import os, time; print(os.getpid(), flush=True); "
                    "time.sleep(60)'; echo after"]


def test_a_step_past_its_deadline_is_killed_with_what_it_started():
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE,
                            text=True, process_group=0)
    seen = []
    with pytest.raises(LabTimeout):
        for line in lines_until_deadline(proc, 1.0, "debootstrap"):
            seen.append(line)
    assert seen and _gone(int(seen[0])), "the step's own child outlived its timeout"


def test_a_step_whose_reader_is_interrupted_is_stopped_with_what_it_started():
    """A SIGINT to the run alone (not the terminal's whole group) must not leave a box build
    running: the interrupted reader stops the step's process group."""
    proc = subprocess.Popen(TREE, stdout=subprocess.PIPE, text=True, process_group=0)
    with pytest.raises(KeyboardInterrupt):
        for line in lines_until_deadline(proc, 30, "debootstrap"):
            grandchild = int(line)
            raise KeyboardInterrupt
    assert _gone(grandchild), "the step's program outlived the interrupt"
    assert proc.returncode is not None


def test_a_step_that_ignores_the_interrupt_is_killed_after_its_grace():
    proc = subprocess.Popen(["sh", "-c", "trap '' INT; echo started; sleep 60"],
                            stdout=subprocess.PIPE, text=True, process_group=0)
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _line in lines_until_deadline(proc, 30, "vagrant up", grace_s=0.5):
            raise KeyboardInterrupt
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - began < 10


STEP_RUNNER = textwrap.dedent("""
    import subprocess, sys
    from lab.core.subrun import lines_until_deadline
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True, process_group=0)
    for line in lines_until_deadline(proc, 60, "debootstrap"):
        print(line, end="", flush=True)
""")


def test_a_sigterm_to_the_run_stops_its_step_with_what_it_started():
    """A cancelled CI job or a dropped SSH session signals the run's process group, which the
    step (in a group of its own) is not in: the run must stop the step itself."""
    runner = subprocess.Popen([sys.executable, "-c", STEP_RUNNER, *TREE], stdout=subprocess.PIPE,
                              text=True)
    grandchild = int(runner.stdout.readline())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=20) == 128 + signal.SIGTERM
    assert _gone(grandchild), "the step's program outlived the run's SIGTERM"
