"""lab.up's vm step: a running VM that the step may recreate is leased first."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from lab.provision import vm
from lab.workflows import up


def machine(state: str):
    return SimpleNamespace(domain_state=lambda: state,
                           ssh_spec=lambda: SimpleNamespace(port=2222))


def test_the_vm_step_holds_the_lease_of_a_vm_that_answers(monkeypatch):
    taken = []
    monkeypatch.setattr(vm, "ssh_banner", lambda port: "SSH-2.0-OpenSSH_9.2")
    monkeypatch.setattr(up.target, "leased",
                        lambda config, what, out: taken.append(what) or contextlib.nullcontext())
    with up._leased_if_up(object(), machine("running"), print):
        pass
    assert taken == ["invoke lab.up (vm step)"]


def test_a_vm_that_is_not_running_or_not_answering_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(up.target, "leased", lambda *a: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setattr(vm, "ssh_banner", lambda port: "")
    for state in ("not created", "shut off", "running"):
        with up._leased_if_up(object(), machine(state), print):
            pass
