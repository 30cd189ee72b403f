"""GuestGuard: what a run does once its lab host came back from a restart."""

from contextlib import contextmanager
from types import SimpleNamespace

from lab.checks.guest_watch import Loss
from lab.pytest_plugin.guest import GuestGuard
from lab.remote import lease


def test_after_a_restart_each_worker_holds_the_lease_again_shared_until_its_run_ends(
        monkeypatch):
    """Every xdist worker takes the lease again, shared: the first worker to end must not
    free the lab host under the others (lease.hold's shared lock, tested in test_lease.py)."""
    events = []

    @contextmanager
    def hold(host, what, timeout, out=print, *, shared=False):
        events.append(("taken", shared))
        yield "token"
        events.append(("released", shared))

    monkeypatch.setattr(lease, "hold", hold)
    config = SimpleNamespace(is_vagrant=False, timeout=lambda name: 5)
    guard = GuestGuard(config, SimpleNamespace(spec=SimpleNamespace(url="ssh://lab@h")),
                       out=lambda line: None)
    test = SimpleNamespace(nodeid="t::panics", session=SimpleNamespace(),
                           get_closest_marker=lambda name: object())  # guest_restart_expected
    guard.begin(test)
    guard.losses[test.nodeid] = Loss("its kernel panicked", at=0.0)
    assert guard.end(test) == ""
    assert events == [("taken", True)], "the lease must be taken again, shared"
    guard.close()
    assert events == [("taken", True), ("released", True)]
