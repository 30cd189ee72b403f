"""lab.up's vm step: a running VM that the step may recreate is leased first, and that lease
serves the steps after it unless the VM was restarted."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from lab.provision import box, hostsetup, vm
from lab.workflows import up


def machine(state: str):
    return SimpleNamespace(domain_state=lambda: state,
                           ssh_spec=lambda: SimpleNamespace(port=2222))


def test_a_vm_answers_only_when_running_with_an_ssh_banner(monkeypatch):
    monkeypatch.setattr(vm, "ssh_banner", lambda port: "SSH-2.0-OpenSSH_9.2")
    assert up._answers(machine("running"))
    assert not up._answers(machine("shut off"))
    monkeypatch.setattr(vm, "ssh_banner", lambda port: "")
    assert not up._answers(machine("running"))


class FakeVM:
    def __init__(self, kept_running: bool):
        self.kept_running_after = kept_running
        self.kept_running = False

    def domain_state(self):
        return "running"

    def ssh_spec(self):
        return SimpleNamespace(port=2222)

    def up(self):
        self.kept_running = self.kept_running_after


@pytest.mark.parametrize("kept_running, leases", [
    (True, ["take", "release"]),  # one lease for the vm step and all after it
    (False, ["take", "release", "take", "release"]),  # restarted: its lease ended, take anew
])
def test_the_vm_steps_lease_serves_the_rest_unless_the_vm_restarted(monkeypatch, kept_running,
                                                                     leases):
    events: list[str] = []

    @contextlib.contextmanager
    def leased(config, what, out):
        events.append("take")
        yield SimpleNamespace(name="host")
        events.append("release")

    monkeypatch.setattr(vm, "ssh_banner", lambda port: "SSH-2.0-OpenSSH_9.2")
    monkeypatch.setattr(vm, "VagrantVM", lambda config, out: FakeVM(kept_running))
    monkeypatch.setattr(hostsetup, "ensure_host", lambda out: None)
    monkeypatch.setattr(box, "ensure_box", lambda config, out: None)
    monkeypatch.setattr(up, "build_all", lambda config, out: None)
    monkeypatch.setattr(up.target, "leased", leased)
    monkeypatch.setattr(up, "provision", lambda host, config: events.append("provision") or {})
    monkeypatch.setattr(up, "push", lambda host, config, out: events.append("push") or [])
    monkeypatch.setattr(up, "verify", lambda host, out, run_binaries: events.append("verify"))
    up.up(SimpleNamespace(is_vagrant=True), out=lambda line: None)
    assert [e for e in events if e in ("take", "release")] == leases
    assert events[-4:] == ["provision", "push", "verify", "release"]
