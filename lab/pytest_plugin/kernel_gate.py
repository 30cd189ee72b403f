"""The kernel-health gate as a fixture: every lab test's span of the lab host's kernel log."""

from __future__ import annotations

import pytest

from lab.checks import kernel_log
from lab.pytest_plugin import keys


@pytest.fixture(autouse=True)
def kernel_health(request):
    """The kernel-health gate (lab/checks/kernel_log.py): a lab test fails when the lab
    host's kernel reported a problem during it. Autouse, so the span opens before the
    test's agent starts; tests that do not use the lab host are left alone."""
    if "lab_host" not in request.fixturenames:
        yield
        return
    host = request.getfixturevalue("lab_host")
    # The span starts where this process's last one ended (read with its gate: one round trip
    # less per test), so the time between two tests counts for the next one, not for none.
    span = request.config.stash.get(keys.KERNEL_SPAN_KEY, None) or kernel_log.open_span(host)
    yield
    if host.lost:
        # Its kernel log died with it (the serial console has the last words): the next
        # test's span starts on the restarted host.
        if keys.KERNEL_SPAN_KEY in request.config.stash:
            del request.config.stash[keys.KERNEL_SPAN_KEY]
        return
    expected = request.node.get_closest_marker("kernel_problems_expected")
    verdict = kernel_log.gate(host, span, expected.args if expected else (),
                              shared_host=keys.parallel(request.config))
    if verdict.next_span is not None:
        request.config.stash[keys.KERNEL_SPAN_KEY] = verdict.next_span
    rec = request.node.stash.get(keys.RECORD_KEY, None)
    if rec is not None:
        # The bundle is written after this teardown fails (lab/checks/recording.py): kernel.txt
        # goes in with the record then, not now (a fresh bundle replaces what was there).
        rec.kernel, rec.kernel_traces = verdict.described, verdict.traces
    if verdict.failure:
        pytest.fail(verdict.failure, pytrace=False)
