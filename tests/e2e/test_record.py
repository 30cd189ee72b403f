"""Story 6, the record of every test and the run's report, on the lab host: an inner run (a
pytester subprocess sharing the outer run's lease, see test_infrastructure.py's module doc)
with a test whose agent does not start and a test whose body fails after its job ran. Each
gets a record in its diagnostics bundle, and the inner run's index.html shows both with links
to them. The report machinery without the lab is covered by tests/unit/test_report.py."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pytest
from test_infrastructure import inner_budget, inner_env

from lab.checks import janitor

pytest_plugins = ["pytester"]

INNER = '''
import pytest


@pytest.mark.agent(log_level="NOPE")  # Nomad refuses to start: "Invalid log level: NOPE"
def test_agent_does_not_start(agent):
    pass


def test_fails_after_its_job_ran(jobs):
    run = jobs.run("hello", args=["recorded"])
    run.wait_dead()
    assert run.exit_codes() == ["a failure on purpose"], "LAB-E2E-PURPOSEFUL-FAILURE"
'''


class Links(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.hrefs: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


@pytest.mark.slow
def test_failing_inner_run_report_and_records_of_a_setup_and_a_body_failure(
        pytester, monkeypatch, lab_host, lab_config):
    for key, value in inner_env(lab_config, lab_host).items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_records=INNER)
    reports = pytester.path / "reports"

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lab-reports",
                                           str(reports), timeout=inner_budget(lab_config))
    out = result.stdout.str()
    try:
        result.assert_outcomes(failed=1, errors=1)
        diag = reports / "diag"

        # Setup failure: the agent's identity and start-up timeline, the error (with the
        # agent log's tail), the host's side of the bundle.
        setup_dir = diag / "test_records.py_test_agent_does_not_start"
        setup = json.loads((setup_dir / "record.json").read_text())
        assert setup["outcome"] == "error" and list(setup["reports"]) == ["setup", "teardown"]
        assert "Invalid log level" in setup["reports"]["setup"]["error"], setup["reports"]
        agent = setup["agent"]
        assert agent["id"].startswith("nomad-lab-") and agent["ports"]["http"] > 0, agent
        assert "unit_started" in agent["timeline"], agent
        assert [name for name, _ in setup["phases"]][:1] == ["agent failed"], setup["phases"]
        assert {"crun.txt", "dmesg.txt", "leftovers.json", "record.txt"} <= {
            p.name for p in setup_dir.iterdir()}
        assert "could not" not in (setup_dir / "record.txt").read_text()

        # Body failure: task events as a timeline, the JAR's download, phases, a clean scan.
        body_dir = diag / "test_records.py_test_fails_after_its_job_ran"
        body = json.loads((body_dir / "record.json").read_text())
        assert body["outcome"] == "failed", body["reports"]
        assert "LAB-E2E-PURPOSEFUL-FAILURE" in body["reports"]["call"]["error"]
        types = [e["type"] for e in body["task_events"]]
        assert {"Received", "Task Setup", "Started", "Terminated"} <= set(types), types
        times = [e["time"] for e in body["task_events"]]
        assert times == sorted(times) and all(times), times
        assert any(r["name"] == "hello.jar" and r["outcome"] == "complete"
                   for r in body["artifact_requests"]), body["artifact_requests"]
        phases = [name for name, _ in body["phases"]]
        assert phases[0] == "agent ready" and {"drained", "stopped", "scanned"} <= set(phases)
        assert any(p.endswith(" dead") for p in phases), phases
        assert body["leftovers"] == {"found": {}, "described": []}
        assert body["agent"]["id"] != agent["id"] and not body["errors"], body["errors"]
        text = (body_dir / "record.txt").read_text()
        assert "event    alloc " in text and "artifact GET hello.jar" in text, text
        assert {"agent.log", "allocations.json", "record.json"} <= {
            p.name for p in body_dir.iterdir()}

        # The report: both tests, their outcome, links that open their records.
        html = (reports / "index.html").read_text()
        for test, outcome in [("test_agent_does_not_start", "error"),
                              ("test_fails_after_its_job_ran", "failed")]:
            assert f'class="{outcome}">{outcome}</span> test_records.py::{test} ' in html
            link = f"diag/test_records.py_{test}/record.txt"
            assert link in Links(html).hrefs and (reports / link).is_file(), link
        assert "Nomad v1.11" in html and "crun version" in html, "the environment on top"
        assert f"lab report: {reports / 'index.html'}" in out
        assert janitor.scan(lab_host) == {}
    except BaseException:
        print(f"inner run's reports kept for inspection: {reports}\n{out[-3000:]}")
        raise
    shutil.rmtree(reports, ignore_errors=True)
