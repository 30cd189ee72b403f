"""The guest watch (lab/checks/guest_watch.py): a panic on the serial console or a host that
stopped answering is a loss, noticed once; and what a loss does to the lab's commands and
waits (lab.remote.host HostLost, lab.core.wait interrupts)."""

from __future__ import annotations

import pytest

from lab.checks.guest_watch import GuestWatch, serial_tail
from lab.core import wait
from lab.remote.host import HostLost, LabHost, SSHSpec

PANIC_LINES = ("[  812.332100] sysrq: Trigger a crash\n"
               "[  812.340019] Kernel panic - not syncing: sysrq triggered crash\n"
               "[  812.341000] CPU: 1 PID: 4242 Comm: bash Not tainted 6.1.0-28-amd64\n")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch_of(serial, clock=None, silent_after=40.0):
    return GuestWatch(host=None, serial_log=serial, silent_after=silent_after,
                      on_loss=lambda loss: None, clock=clock or Clock())


def test_a_panic_written_after_the_watch_began_is_a_loss_with_the_console_tail(tmp_path):
    serial = tmp_path / "vm.serial.log"
    serial.write_text("[    0.000000] Linux version 6.1.0\n[    9.1] Kernel panic - not syncing: "
                      "an earlier boot's, before the watch\n")
    watch = watch_of(serial)
    watch.rearm()
    assert watch.check() is None
    with serial.open("a") as log:
        log.write(PANIC_LINES)
    loss = watch.check()
    assert loss is not None and "its kernel panicked: [  812.340019] Kernel panic - not " \
        "syncing: sysrq triggered crash" in loss.why
    assert loss.serial[-1].endswith("Not tainted 6.1.0-28-amd64")
    assert "sysrq: Trigger a crash" in loss.serial[-3]
    assert watch.check() is None  # noticed once, until re-armed


def test_a_line_split_across_two_reads_is_seen_whole(tmp_path):
    serial = tmp_path / "vm.serial.log"
    serial.write_text("")
    watch = watch_of(serial)
    watch.rearm()
    with serial.open("a") as log:
        log.write("[  1.0] Kernel pan")
    assert watch.check() is None
    with serial.open("a") as log:
        log.write("ic - not syncing: VFS: Unable to mount root fs\n")
    assert "Unable to mount root fs" in watch.check().why


def test_a_console_file_started_again_by_a_new_boot_is_read_from_its_start(tmp_path):
    serial = tmp_path / "vm.serial.log"
    serial.write_text("x" * 5000 + "\n")
    watch = watch_of(serial)
    watch.rearm()
    serial.write_text(PANIC_LINES)  # shorter than where the watch was: truncated
    assert "sysrq triggered crash" in watch.check().why


def test_a_host_silent_longer_than_the_limit_is_lost_and_rearm_gives_a_new_deadline(tmp_path):
    clock = Clock()
    watch = watch_of(None, clock, silent_after=40.0)
    watch.rearm()
    clock.now += 39.0
    assert watch.check() is None
    clock.now += 2.0
    loss = watch.check()
    assert loss is not None and "answered nothing over SSH for 41s (the limit: 40s" in loss.why
    assert loss.serial == []  # no console (an ssh:// host)
    watch.rearm()
    assert watch.loss is None and watch.check() is None


def test_serial_tail_keeps_the_last_lines_and_tolerates_a_missing_file(tmp_path):
    serial = tmp_path / "s.log"
    serial.write_text("".join(f"line {i}\r\n" for i in range(200)))
    assert serial_tail(serial, 3) == ["line 197", "line 198", "line 199"]
    assert serial_tail(tmp_path / "none.log") == []


def test_a_host_declared_lost_fails_every_command_at_once_until_it_recovered():
    host = LabHost(SSHSpec("127.0.0.1", 9, "lab"), connect_timeout=1)
    host.declare_lost("its kernel panicked: Kernel panic - not syncing")
    with pytest.raises(HostLost, match="declared lost: its kernel panicked"):
        host.run("true")
    with pytest.raises(HostLost):
        host.transport()
    host.recovered()
    assert host.lost == ""


def test_an_interrupt_ends_a_wait_between_polls_and_only_while_registered():
    polls = []

    def lost():
        if len(polls) >= 2:
            raise HostLost("the lab host was declared lost: panicked")

    with wait.interrupting(lost), pytest.raises(HostLost):
        wait.until(lambda: polls.append(1), 60, "a job", sleep=lambda s: None)
    assert len(polls) == 2
    assert wait.until(lambda: polls.append(1) or len(polls) > 4, 60, "x",
                      sleep=lambda s: None)
