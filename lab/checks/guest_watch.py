"""The guest watch: notice within seconds that the lab host's kernel panicked or that the
host stopped answering, instead of when a job's wait runs out minutes later.

Two signals, both cheap for the guest:
- the serial console (the kernel's console=ttyS0, kept in a file on this machine for a
  Vagrant lab: lab/provision/vm.py VagrantVM.serial_log), read every `poll` seconds for a
  panic line: a panicked kernel writes nothing anywhere else;
- an SSH keepalive (a global request sshd must answer, on a connection of the watch's own)
  every `probe_every` seconds: a host whose last answer is older than `silent_after` is lost
  (hung, or a panic with no serial console to show it: an ssh:// host).

On a loss the watch calls on_loss(Loss) once and waits to be re-armed (after a restart).
What a loss does to the run (the test fails with the serial lines, the VM restarts, the run
goes on) is the pytest plugin's (lab/pytest_plugin/guest.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from lab.checks.kernel_log import PROBLEMS
from lab.core.errors import LabError
from lab.remote.host import LabHost

PANIC = re.compile(PROBLEMS["panic"])
SERIAL_LINES_KEPT = 80  # of the serial console, in a lost test's diagnostics
KEEPALIVE = "keepalive@nomad-lab"  # any name: sshd answers an unknown request with a failure


@dataclass
class Loss:
    why: str  # "its kernel panicked: ...", "it answered nothing over SSH for 40 s"
    at: float  # time.time() when the watch noticed
    serial: list[str] = field(default_factory=list)  # the serial console's last lines

    def describe(self) -> str:
        return f"{self.why} (noticed at {time.strftime('%H:%M:%S', time.localtime(self.at))})"


def serial_tail(path: Path | None, lines: int = SERIAL_LINES_KEPT) -> list[str]:
    if path is None:
        return []
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]  # splitlines also ends a line at the console's \r\n


class GuestWatch:
    """Watches one lab host from two daemon threads; start() once, rearm() after a restart."""

    def __init__(self, host: LabHost, serial_log: Path | None, silent_after: float,
                 on_loss: Callable[[Loss], None], *, poll: float = 1.0,
                 probe_every: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.host, self.serial_log, self.silent_after = host, serial_log, silent_after
        self.on_loss, self.poll, self.probe_every, self.clock = on_loss, poll, probe_every, clock
        self.loss: Loss | None = None
        self.slowest_answer = 0.0  # the longest keepalive round trip seen (for the record)
        self._offset = 0
        self._partial = ""  # a serial line not yet ended by its newline
        self._last_answer = clock()
        self._stopped = threading.Event()
        self._own: LabHost | None = None
        self.errors: list[str] = []  # what the threads caught (kept for the run's summary)
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> GuestWatch:
        self.rearm()
        for target, name in ((self._monitor, "lab-guest-watch"),
                             (self._prober, "lab-guest-probe")):
            thread = threading.Thread(target=target, daemon=True, name=name)
            thread.start()
            self._threads.append(thread)
        return self

    def rearm(self) -> None:
        """Watch from now on: the serial console from its current end, a fresh deadline."""
        self._offset, self._partial = self._serial_size(), ""
        self._last_answer = self.clock()
        self.loss = None

    def stop(self) -> None:
        """Stop both threads (closing the watch's connection ends a keepalive under way), so
        that what they recorded is final."""
        self._stopped.set()
        own = self._own
        if own is not None:
            own.close()
        for thread in self._threads:
            thread.join(timeout=self.poll + 5)

    # -- the serial console --------------------------------------------------------------
    def _serial_size(self) -> int:
        try:
            return self.serial_log.stat().st_size if self.serial_log else 0
        except OSError:
            return 0

    def check_serial(self) -> str:
        """The first panic line written since the last call, or ''."""
        if self.serial_log is None:
            return ""
        size = self._serial_size()
        if size < self._offset:  # a new boot's console started the file again
            self._offset, self._partial = 0, ""
        if size == self._offset:
            return ""
        try:
            with self.serial_log.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read(size - self._offset).decode(errors="replace")
        except OSError:
            return ""
        self._offset = size
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        return next((line.strip() for line in lines if PANIC.search(line)), "")

    # -- the threads ---------------------------------------------------------------------
    def check(self) -> Loss | None:
        """One look at both signals; a loss found is kept and returned (on_loss not called)."""
        if self.loss is not None:
            return None
        panic = self.check_serial()
        silent = self.clock() - self._last_answer
        if panic:
            why = f"its kernel panicked: {panic}"
        elif silent > self.silent_after:
            why = (f"it answered nothing over SSH for {silent:.0f}s (the limit: "
                   f"{self.silent_after:.0f}s, the guest_silent timeout times the timeout "
                   "scale; LAB_TIMEOUT_GUEST_SILENT sets the former): hung, or it panicked "
                   "with no serial console here")
        else:
            return None
        self.loss = Loss(why, time.time(), serial_tail(self.serial_log))
        return self.loss

    def _monitor(self) -> None:
        while not self._stopped.wait(self.poll):
            try:
                loss = self.check()
                if loss is not None:
                    self.on_loss(loss)
            except Exception as exc:  # noqa: BLE001 - a watch that dies would watch nothing
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _prober(self) -> None:
        while not self._stopped.is_set():
            try:
                if self._keepalive():
                    self._last_answer = self.clock()
            except Exception as exc:  # noqa: BLE001 - a dead prober would look like silence
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stopped.wait(self.probe_every)

    def _keepalive(self) -> bool:
        """True when the lab host's sshd answered a keepalive (blocks while it does not)."""
        try:
            if self._own is None:
                self._own = LabHost(self.host.spec, name=f"{self.host.name}-watch",
                                    connect_timeout=min(30.0, self.silent_after))
            transport = self._own.transport()
            began = self.clock()  # the answer's time, not a reconnect's
            transport.global_request(KEEPALIVE, wait=True)  # None: refused, still an answer
            if not transport.is_active():
                return False
            self.slowest_answer = max(self.slowest_answer, self.clock() - began)
            return True
        except (LabError, OSError, EOFError, paramiko.SSHException):
            own, self._own = self._own, None
            if own is not None:
                own.close()
            return False
