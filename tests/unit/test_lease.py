"""The lease's protocol with the lab host, over a fake channel: whole lines decide, so a
holder's command line cannot pass for the lease's own answers."""

from __future__ import annotations

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
        host = SimpleNamespace(spec=SimpleNamespace(url="ssh://lab@127.0.0.1:2222"), name="vm")
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
