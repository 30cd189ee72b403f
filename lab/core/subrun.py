"""Child processes: pytest run so that Ctrl-C reaches it; long steps under one deadline, stopped
with what they started.

run_forwarding_interrupts: `subprocess.call` SIGKILLs its child when the parent gets
KeyboardInterrupt, so pytest never runs its teardown. Here the parent keeps waiting instead:
in a terminal, Ctrl-C is delivered to the whole foreground process group, so the child got its
own SIGINT; when the parent alone was interrupted (a signal sent to it only), it passes SIGINT
on. A second Ctrl-C reaches the child too (pytest then stops tearing down; the next run's
sweep heals the lab host).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lab.core.errors import LabTimeout


def run_forwarding_interrupts(cmd: list[str], **popen_kwargs) -> int:
    """Run `cmd` to completion and return its exit code, whatever Ctrl-C does to us."""
    if threading.current_thread() is not threading.main_thread():
        return subprocess.call(cmd, **popen_kwargs)  # no signal handlers there: none reach us
    started: list[subprocess.Popen] = []
    pending: list[bool] = []  # an interrupt came before the child existed

    def on_sigint(_signum=None, _frame=None) -> None:
        # A handler, not KeyboardInterrupt: one raised inside Popen() itself, after the fork
        # (seen under load), would leave the child running with nobody to forward it.
        if not started:
            pending.append(True)
        elif started[0].poll() is None and not _same_foreground_group(started[0].pid):
            started[0].send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        started.append(subprocess.Popen(cmd, **popen_kwargs))
        if pending:
            on_sigint()
        return started[0].wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _same_foreground_group(pid: int) -> bool:
    """True when a terminal's Ctrl-C already reached the child (it is in our terminal's
    foreground process group, as a child of ours is unless started in a new session)."""
    try:  # our controlling terminal, whatever our stdin is (`invoke lab.up </dev/null`)
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no terminal: the interrupt was sent to us alone
    try:
        tty_group = os.tcgetpgrp(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        return os.getpgid(pid) == tty_group
    except ProcessLookupError:
        return True


def lines_until_deadline(proc: subprocess.Popen, deadline_s: float, what: str,
                         hint: str = "", grace_s: float = 10.0) -> Iterator[str]:
    """Yield `proc`'s output lines; stop it and raise LabTimeout (with its last line) when it
    runs past `deadline_s`, even if it went silent (a hung vagrant or debootstrap).

    Started in its own process group (Popen's process_group=0), what it started stops with it:
    a debootstrap under the box build script. When we stop reading early (Ctrl-C, SIGTERM or
    SIGHUP to us, an error of the reader), it is stopped too (stop_tree), not left running."""
    own_group = _leads_own_group(proc)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="lab-output-reader").start()
    end = time.monotonic() + deadline_s
    last, timed_out = None, False
    with _terminations_raise():
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.0, end - time.monotonic()))
                except queue.Empty:
                    timed_out = True  # hung: no grace beyond the deadline
                    stop_tree(proc, own_group, grace_s=0, interrupt=False)
                    break
                if line is None:
                    return
                last = line.rstrip() or last
                yield line
        except BaseException:  # KeyboardInterrupt, SystemExit, GeneratorExit, errors
            if proc.poll() is None or own_group:
                stop_tree(proc, own_group, grace_s)
            raise
    if timed_out:
        raise LabTimeout(what, deadline_s, last, hint)


def stop_tree(proc: subprocess.Popen, own_group: bool, grace_s: float,
              interrupt: bool = True) -> None:
    """Stop proc and what it started as a terminal's Ctrl-C would: SIGINT (to its process group
    when it leads one; vagrant then cleans up, debootstrap stops) unless a terminal's Ctrl-C
    reached it already; SIGKILL for whatever is left after grace_s (or a second Ctrl-C)."""
    if interrupt and proc.poll() is None and not _same_foreground_group(proc.pid):
        _signal_tree(proc, own_group, signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _signal_tree(proc, own_group, signal.SIGKILL)
        proc.wait()


@contextmanager
def _terminations_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP (a CI job cancelled, an SSH session dropped) raise SystemExit while
    a step runs, so that its clean-up runs: the step is in a process group of its own, which
    a signal to ours no longer reaches."""
    if threading.current_thread() is not threading.main_thread():
        yield  # no signal handlers there
        return

    def terminate(signum, _frame) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _leads_own_group(proc: subprocess.Popen) -> bool:
    try:  # a child that already exited is a zombie until we wait for it: still answers
        return os.getpgid(proc.pid) == proc.pid != os.getpgrp()
    except ProcessLookupError:
        return False


def _signal_tree(proc: subprocess.Popen, own_group: bool, signum: int) -> None:
    if not own_group:
        if proc.returncode is None:
            proc.send_signal(signum)
        return
    try:
        os.killpg(proc.pid, signum)  # the group outlives its leader while members live
    except ProcessLookupError:
        pass  # all gone
    except PermissionError:
        # A step run as root under our `sudo -n` (the box build when we are not root).
        subprocess.run(["sudo", "-n", "kill", f"-{signum}", "--", f"-{proc.pid}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
