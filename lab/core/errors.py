"""Errors that name what failed, where, and how to fix it."""

from __future__ import annotations


class LabError(Exception):
    """Base class: every lab error message says what failed and what to do about it."""


class CommandFailed(LabError):
    """A command on a host exited non-zero (or could not be run at all)."""

    def __init__(self, host: str, cmd: str, rc: int | None, stderr: str, stdout: str = "",
                 hint: str = ""):
        self.host, self.cmd, self.rc, self.stderr, self.stdout = host, cmd, rc, stderr, stdout
        tail = _tail(stderr or stdout)
        msg = f"on {host}: `{_shorten(cmd)}` exited {rc}"
        if tail:
            msg += f":\n{tail}"
        if hint:
            msg += f"\nfix: {hint}"
        super().__init__(msg)


class LabTimeout(LabError):
    """A wait ran out of time; `last` is the last state observed before the deadline."""

    def __init__(self, what: str, timeout: float, last: object = None, hint: str = ""):
        self.what, self.timeout, self.last = what, timeout, last
        msg = f"timed out after {timeout:.1f}s waiting for {what}"
        msg += f"; last seen: {last}" if last is not None else "; nothing was observed"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)


def _shorten(cmd: str, limit: int = 300) -> str:
    return cmd if len(cmd) <= limit else cmd[: limit - 3] + "..."


def _tail(text: str, lines: int = 15) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)
