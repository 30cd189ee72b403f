"""errors: every message names what failed, where, and the fix."""

from __future__ import annotations

import pytest

from lab.core.errors import CommandFailed, LabError, LabTimeout


def test_command_failed_names_host_command_rc_stderr_tail_and_fix():
    stderr = "\n".join(f"line {i}" for i in range(1, 31))
    exc = CommandFailed("vm", "crun run x", 2, stderr, stdout="ignored", hint="install crun")
    msg = str(exc)
    assert msg.startswith("on vm: `crun run x` exited 2:")
    assert "    line 30" in msg and "    line 16" in msg
    assert "    line 15\n" not in msg, "only the last 15 stderr lines are kept"
    assert msg.endswith("\nfix: install crun")
    assert (exc.host, exc.cmd, exc.rc, exc.stdout) == ("vm", "crun run x", 2, "ignored")
    assert isinstance(exc, LabError)


def test_command_failed_falls_back_to_stdout_and_has_no_fix_line_without_hint():
    msg = str(CommandFailed("vm", "false", 1, "", stdout="only stdout\n"))
    assert msg == "on vm: `false` exited 1:\n    only stdout"


def test_command_failed_without_output_or_rc():
    assert str(CommandFailed("vm", "ssh", None, "")) == "on vm: `ssh` exited None"


def test_command_failed_shortens_huge_commands():
    msg = str(CommandFailed("vm", "x" * 1000, 1, "boom"))
    first = msg.splitlines()[0]
    assert len(first) < 400 and "x" * 297 + "..." in first


@pytest.mark.parametrize("last, expected", [
    ("node status=initializing", "; last seen: node status=initializing"),
    (None, "; nothing was observed"),
    (0, "; last seen: 0"),
])
def test_lab_timeout_message(last, expected):
    exc = LabTimeout("agent ready", 12.345, last, hint="see agent.log")
    assert str(exc) == f"timed out after 12.3s waiting for agent ready{expected}\nsee agent.log"
    assert (exc.what, exc.timeout, exc.last) == ("agent ready", 12.345, last)


def test_lab_timeout_without_hint_is_one_line():
    assert "\n" not in str(LabTimeout("x", 1, "y"))
