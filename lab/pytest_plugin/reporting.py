"""The run's report page (lab/checks/report.py), written by the process that sees every
test's report: the session itself, or the xdist controller (workers attach each test's record
to its teardown report)."""

from __future__ import annotations

import os

import pytest

from lab.checks import durations, report
from lab.pytest_plugin import keys

REPORTER_ENV = "LAB_REPORTING_PID"  # the pytest process writing index.html


class Reporting:
    """In the process that sees every test's report (not an xdist worker): gathers the
    records that come with the teardown reports and writes index.html at the end."""

    def __init__(self, config):
        self.config = config
        self.run = report.RunReport(" ".join(config.invocation_params.args))
        # A run inside another (the e2e suite's nested runs) leaves the outer run's page alone.
        self.nested = os.environ.get(REPORTER_ENV, str(os.getpid())) != str(os.getpid())
        os.environ[REPORTER_ENV] = str(os.getpid())  # inherited by the runs we start
        self.durations = durations.Recorder()

    def pytest_runtest_logreport(self, report):
        self.durations.add(report.nodeid, report.when, report.outcome, report.duration)
        if report.when == "teardown" and getattr(report, "lab_record", None) is not None:
            self.run.add(report.lab_record, getattr(report, "lab_env", None))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.run.used_the_lab and not self.nested:
            try:
                durations.save(durations_file(self.config), self.durations.measured())
            except OSError as exc:  # balancing the next run is not worth failing this one
                self.run.error = f"could not record the tests' durations: {exc}"
        given = self.config.getoption("--lab-reports")
        if not self.run.records or not (given or (self.run.used_the_lab and not self.nested)):
            return
        report_id = self.config.getoption("--lab-report-id") or keys.lab_config(self.config).run_id
        try:
            self.run.write(keys.reports_dir(self.config), report_id, int(exitstatus))
        except Exception as exc:  # noqa: BLE001 - the report must not turn a run into an error
            self.run.error = f"could not write the lab report: {type(exc).__name__}: {exc}"


def durations_file(config):
    """Where each test's duration is kept for the next parallel run (lab.checks.durations)."""
    return keys.lab_config(config).state_dir / durations.FILE_NAME
