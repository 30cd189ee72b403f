"""A lab host lost during a run: the test it happened in fails, the VM restarts, the run goes on.

The guest watch (lab/checks/guest_watch.py) notices a panic on the serial console or a host
that stopped answering within seconds. Then:
- the lab host is declared lost: every command and every wait of the test fails at once
  (HostLost) instead of at its timeout, and its teardown skips the drain, stop, leftover scan
  and kernel gate (there is nothing left to ask);
- the test fails, with the loss and the serial console's last lines in its report and in its
  diagnostics bundle (serial.txt);
- a Vagrant VM is powered off and booted again, its lease taken again, and brought back to
  what lab.up leaves (lab.workflows.up.after_restart); the next test runs on it. An ssh://
  host cannot be restarted by the lab: it is reported and the run stops there.

A test that restarts the guest on purpose (an inner run whose guest panics) is marked
`guest_restart_expected`: its loss is recorded, not failed, and the run waits for the host.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from lab.checks.guest_watch import GuestWatch, Loss
from lab.core import wait
from lab.core.config import LabConfig
from lab.remote.host import HostLost, LabHost

MAX_RESTARTS = 3  # per pytest process: a guest that keeps dying is a finding, not a retry
BETWEEN_TESTS = "between tests"
RESTART_EXPECTED = "guest_restart_expected"


class GuestGuard:
    def __init__(self, lab_config: LabConfig, host: LabHost, out=print):
        self.lab_config, self.host, self.out = lab_config, host, out
        serial = None
        if lab_config.is_vagrant:
            from lab.provision.vm import VagrantVM

            serial = VagrantVM(lab_config).serial_log
        self.watch = GuestWatch(host, serial, lab_config.timeout("guest_silent"), self._lost)
        self.losses: dict[str, Loss] = {}  # test id -> the loss noticed during it
        self.restarts = 0
        self.pool = None  # the agent pool, whose agents started ahead die with the guest
        self._current, self._expected, self._interrupting = "", False, False
        self._leases = ExitStack()  # the leases taken again after restarts
        self.closed = False

    # -- the watch's side (its thread) ---------------------------------------------------
    def _lost(self, loss: Loss) -> None:
        self.losses[self._current or BETWEEN_TESTS] = loss
        if self._expected:
            return
        self._interrupting = True
        self.host.declare_lost(loss.describe())

    def raise_if_lost(self) -> None:
        """A wait's interrupt: no state polled on a lost host will ever come."""
        if self._interrupting:
            raise HostLost(f"the lab host {self.host.spec.url} was declared lost: "
                           f"{self.host.lost}")

    # -- the run's side ------------------------------------------------------------------
    def begin(self, item) -> None:
        """As a test sets up: a host lost between tests is brought back first (this test
        did not lose it)."""
        pending = self.losses.pop(BETWEEN_TESTS, None)
        if pending is not None:
            stop = self._bring_back(pending, expected=False, during="between two tests")
            if stop:
                item.session.shouldstop = stop
                raise HostLost(stop)
        self._current = item.nodeid
        self._expected = item.get_closest_marker(RESTART_EXPECTED) is not None

    def loss_of(self, item) -> Loss | None:
        return self.losses.get(item.nodeid)

    def end(self, item) -> str:
        """After a test's teardown: bring a lost host back. Returns why the run must stop
        ('' to go on)."""
        loss, expected = self.losses.get(item.nodeid), self._expected
        self._current, self._expected = "", False
        if loss is None or self.closed:  # closed: that was the run's last test
            return ""
        return self._bring_back(loss, expected, during=item.nodeid)

    def _bring_back(self, loss: Loss, expected: bool, during: str) -> str:
        began = time.monotonic()
        try:
            if expected:
                self.out(f"lab: the lab host restarted during {during}, as the test "
                         f"meant: {loss.why}")
                self._lease_again()
            else:
                stop = self.recover(loss)
                if stop:
                    return stop
        except Exception as exc:  # noqa: BLE001 - whatever failed, the run cannot go on here
            return (f"the lab host {self.host.spec.url} was lost ({loss.why}) and could not be "
                    f"brought back: {type(exc).__name__}: {exc}. Fix: `./invoke lab.up` "
                    "(it restarts a VM that does not answer), then run again")
        self.watch.rearm()
        self.out(f"lab: the lab host is back after {time.monotonic() - began:.0f}s; "
                 "the run goes on")
        return ""

    def recover(self, loss: Loss) -> str:
        if self.pool is not None:
            self.pool.forget_ahead()  # while waits still end at once on the lost host
        self._interrupting = False
        url = self.host.spec.url
        if not self.lab_config.is_vagrant:
            return (f"the lab host {url} was lost ({loss.why}); the lab cannot restart an ssh:// "
                    "host: the run stops here. Fix: restart it (its console shows why it "
                    "died), then `./invoke lab.up --target ...` and run again")
        if self.restarts >= MAX_RESTARTS:
            return (f"the lab host {url} was lost again ({loss.why}) after {self.restarts} "
                    "restarts in this run: stopping. See the failed tests' serial.txt")
        from lab.provision.vm import VagrantVM
        from lab.workflows.up import after_restart

        vm = VagrantVM(self.lab_config, out=self.out)
        # xdist workers on this VM all notice the loss: the first restarts it and brings it
        # back (its sweep must not meet another worker's next agent), the others go on.
        with vm.restart_lock():
            if vm.restarted_after(loss.at):
                self.out(f"lab: {vm.name} was restarted by another worker of this run")
                self.host.recovered()
                self._lease_again()
                return ""
            self.restarts += 1
            vm.restart(loss.why)
            self.host.recovered()
            self._lease_again()
            after_restart(self.host, self.lab_config, self.out)
        return ""

    def _lease_again(self) -> None:
        """The lease's holder died with the guest: take it again for the rest of the run,
        shared with this run's other workers, so that it lasts until the last of them ends."""
        from lab.remote import lease

        self._leases.enter_context(lease.hold(self.host, "pytest (after the lab host restarted)",
                                              self.lab_config.timeout("lease"), self.out,
                                              shared=True))

    def close(self) -> None:
        self.closed = True
        self.watch.stop()
        self._leases.close()

    def summary(self) -> str:
        """For the run's end: how close the lab host came to the silence limit, and losses."""
        lost = "; ".join(f"{test}: {loss.why}" for test, loss in list(self.losses.items()))
        return (f"guest watch: the slowest SSH keepalive answer took "
                f"{self.watch.slowest_answer:.2f}s (lost after {self.watch.silent_after:.0f}s "
                f"of silence); lab host lost {len(self.losses)} time(s), VM restarted "
                f"{self.restarts} time(s){': ' + lost if lost else ''}"
                + (f"; the watch itself hit: {'; '.join(self.watch.errors[-3:])}"
                   if self.watch.errors else ""))


def loss_report(loss: Loss) -> str:
    """The failure text of the test a loss happened in."""
    tail = "\n".join(f"    {line}" for line in loss.serial[-25:]) or "    (no serial console)"
    return (f"the lab host was lost during this test: {loss.describe()}\n"
            f"  the serial console's last lines (all kept in the bundle's serial.txt):\n{tail}")


@pytest.fixture(scope="session")
def guest_guard(pytestconfig, lab_config, lab_host):
    from lab.pytest_plugin import keys

    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def out(text: str) -> None:
        """Shown as it happens (a restart takes a minute under TCG), not captured with the
        test's output."""
        if terminal is None:
            print(text)
        elif capture is None:
            terminal.write_line(text)
        else:
            with capture.global_and_fixture_disabled():
                terminal.write_line(text)

    guard = GuestGuard(lab_config, lab_host, out)
    pytestconfig.stash[keys.GUARD_KEY] = guard
    guard.watch.start()
    with wait.interrupting(guard.raise_if_lost):
        yield guard
    guard.close()  # kept in the stash: the last test's report and the summary read it




@pytest.fixture(autouse=True)
def guest_watched(request):
    """Every lab test runs under the guest watch."""
    if "lab_host" in request.fixturenames:
        request.getfixturevalue("guest_guard").begin(request.node)
    yield
