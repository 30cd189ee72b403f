"""The lease's protocol with the lab host, over a fake channel: whole lines decide, so a
holder's command line cannot pass for the lease's own answers; and its script, run by real
bash and flock: a free lock is taken, a held one makes the next run wait and name the holder."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from lab.remote import lease


class FakeChannel:
    def __init__(self, chunks: list[str]):
        self.chunks = [c.encode() for c in chunks]
        self.closed = False

    def settimeout(self, _):
        pass

    def recv(self, _):
        return self.chunks.pop(0) if self.chunks else b""

    def shutdown_write(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def lease_with(monkeypatch):
    def start(chunks: list[str], timeout: float = 5):
        channel = FakeChannel(chunks)
        monkeypatch.setattr(lease, "LabHost", lambda spec, name, connect_timeout: SimpleNamespace(
            open_channel=lambda script, sudo: channel, close=lambda: None))
        monkeypatch.delenv(lease.LEASE_ENV, raising=False)
        host = SimpleNamespace(spec=SimpleNamespace(url="ssh://lab@127.0.0.1:2222"), name="vm",
                               transport=lambda: None)
        lines: list[str] = []
        return lease.hold(host, "invoke test", timeout, out=lines.append), lines, channel
    return start


def test_a_free_lock_is_leased_at_once(lease_with):
    held, lines, channel = lease_with(["LEA", "SED\n"])
    with held as token:
        assert token
    assert lines == [] and channel.closed


def test_a_waiter_names_the_holder_then_gets_the_lease(lease_with):
    held, lines, _ = lease_with(["WAITING token=ab command='pytest -k LEASED or BUSY' pid=7\n",
                                 "LEASED\n"])
    with held:
        pass
    assert lines == ["lab: the lab host ssh://lab@127.0.0.1:2222 is leased by another run "
                     "(command='pytest -k LEASED or BUSY' pid=7); waiting up to 5s"]


def test_a_holder_whose_command_says_leased_does_not_lease_the_waiter(lease_with):
    held, _, _ = lease_with(["WAITING token=ab command='LEASED' pid=7\n", "BUSY\n",
                             "token=ab command='LEASED' pid=7\n"])
    with pytest.raises(lease.LeaseBusy, match="command='LEASED' pid=7"):
        with held:
            pytest.fail("leased while another run holds the lease")


class LocalChannel:
    """The lease's command run by this machine's bash: a channel whose stdin is the pipe that
    keeps `cat` (and so the lock) alive."""

    def __init__(self, script: str):
        self.proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.timeout = None

    def settimeout(self, seconds):
        self.timeout = seconds

    def recv(self, size):
        return self.proc.stdout.read1(size)

    def shutdown_write(self):
        self.proc.stdin.close()

    def close(self):
        self.proc.wait(timeout=10)


@pytest.fixture
def real_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "LOCK_FILE", str(tmp_path / "lease"))
    monkeypatch.setattr(lease, "HOLDER_FILE", str(tmp_path / "lease-holder"))
    monkeypatch.setattr(lease, "LabHost", lambda spec, name, connect_timeout: SimpleNamespace(
        open_channel=lambda script, sudo: LocalChannel(script), close=lambda: None))
    monkeypatch.delenv(lease.LEASE_ENV, raising=False)
    return SimpleNamespace(spec=SimpleNamespace(url="ssh://local"), name="local",
                           transport=lambda: None)


def test_the_lease_script_takes_a_free_lock_and_makes_the_next_run_wait_for_it(real_lock,
                                                                              tmp_path):
    host, first_out, second_out = real_lock, [], []
    second_leased = threading.Event()
    with lease.hold(host, "first run", 10, out=first_out.append):
        assert "command='first run'" in (tmp_path / "lease-holder").read_text()
        # The second run is another process: it does not inherit the first one's token.
        del os.environ[lease.LEASE_ENV]

        def second():
            with lease.hold(host, "second run", 10, out=second_out.append):
                second_leased.set()
        waiter = threading.Thread(target=second)
        waiter.start()
        for _ in range(200):  # until the second run says it waits (flock -w is waiting)
            if second_out or second_leased.is_set():
                break
            time.sleep(0.05)
        assert second_out and not second_leased.is_set(), \
            "the second run got the lease while it was held"
    waiter.join(timeout=10)
    assert second_leased.is_set() and first_out == []
    assert len(second_out) == 1 and "leased by another run (command='first run' pid=" in \
        second_out[0], second_out
    assert not (tmp_path / "lease-holder").exists()


def test_a_lock_file_that_cannot_be_opened_is_not_taken_for_another_runs_lease(real_lock,
                                                                               monkeypatch,
                                                                               tmp_path):
    monkeypatch.setattr(lease, "LOCK_FILE", str(tmp_path / "no-such-dir" / "lease"))
    with pytest.raises(lease.LabError, match=r"could not be taken: flock on .* exited 66, not "
                                             r"because another run holds it"):
        with lease.hold(real_lock, "a run", 10):
            pytest.fail("leased without a lock")


def test_a_run_that_leases_another_host_or_the_same_one_again_takes_its_inherited_token(
        monkeypatch):
    """Several lab hosts in one run (each leased in turn), or a host leased again after it
    restarted: one token, so every worker shares the lease through the one LAB_LEASE."""
    scripts: list[str] = []
    channel = FakeChannel(["LEASED\n"])
    monkeypatch.setattr(lease, "LabHost", lambda spec, name, connect_timeout: SimpleNamespace(
        open_channel=lambda script, sudo: scripts.append(script) or channel, close=lambda: None))
    monkeypatch.setenv(lease.LEASE_ENV, "abc123")
    host = SimpleNamespace(spec=SimpleNamespace(url="ssh://lab@127.0.0.1:2222"), name="vm2",
                           transport=lambda: None,
                           sudo=lambda cmd, check: SimpleNamespace(stdout=""))  # nobody holds it
    with lease.hold(host, "invoke test", 5) as token:
        assert token == "abc123" and os.environ[lease.LEASE_ENV] == "abc123"
    assert "token=abc123 " in scripts[0]


def test_after_a_restart_the_workers_shared_lease_lasts_until_the_last_of_them_ends(
        real_lock, tmp_path, monkeypatch):
    """Under -n every worker takes the lease again after the VM restarted: the first one to
    end must not free the lab host while the others still run."""
    host, record = real_lock, tmp_path / "lease-holder"
    monkeypatch.setenv(lease.LEASE_ENV, "run1token")  # both workers inherited the run's token
    first = lease.hold(host, "worker gw0", 10, shared=True)
    second = lease.hold(host, "worker gw1", 10, shared=True)
    first.__enter__()
    second.__enter__()  # at once: a shared lock of the same run does not wait
    first.__exit__(None, None, None)
    assert "token=run1token" in record.read_text(), "the record went with the first worker"
    other_out, other_leased = [], threading.Event()

    def another_run():
        os.environ.pop(lease.LEASE_ENV, None)
        with lease.hold(host, "another run", 10, out=other_out.append):
            other_leased.set()
    waiter = threading.Thread(target=another_run)
    waiter.start()
    for _ in range(200):  # until the other run says it waits
        if other_out or other_leased.is_set():
            break
        time.sleep(0.05)
    assert other_out and not other_leased.is_set(), \
        "another run got the lease while a worker of this run still held it"
    second.__exit__(None, None, None)
    waiter.join(timeout=10)
    assert other_leased.is_set(), "the lease stayed taken after the last worker ended"
    assert not record.exists()


def test_a_shared_lease_again_shares_its_own_runs_exclusive_lock_instead_of_waiting_for_it(
        real_lock, tmp_path, monkeypatch):
    """A worker that leases again while the run's own lock still holds (the guest did not
    really restart) must not wait for its own run until the lease timeout."""
    host = real_lock
    with lease.hold(host, "the run", 10):  # exclusive, as `invoke test` takes it
        began = time.monotonic()
        with lease.hold(host, "worker gw0 (after the lab host restarted)", 5, shared=True):
            assert time.monotonic() - began < 3, "the worker waited for its own run's lock"
            assert "command='the run'" in (tmp_path / "lease-holder").read_text()
        assert "command='the run'" in (tmp_path / "lease-holder").read_text(), \
            "the worker's release removed its run's record"
    assert not (tmp_path / "lease-holder").exists()
