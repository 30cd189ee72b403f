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
    span = kernel_log.open_span(host)
    yield
    expected = request.node.get_closest_marker("kernel_problems_expected")
    described, failure, traces = kernel_log.gate(
        host, span, expected.args if expected else (), shared_host=keys.parallel(request.config))
    rec = request.node.stash.get(keys.RECORD_KEY, None)
    if rec is not None:
        # The bundle is written after this teardown fails (lab/checks/recording.py): kernel.txt
        # goes in with the record then, not now (a fresh bundle replaces what was there).
        rec.kernel, rec.kernel_traces = described, traces
    if failure:
        pytest.fail(failure, pytrace=False)
