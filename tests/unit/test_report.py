"""report: index.html from records (escaped, relative links into the bundles, the environment
on top), passes of one report id merged into one page; and, with pytester, a failing inner run
(no lab needed: --lab-reports records every test) whose index.html and bundles hold a record
for a setup, a body and a teardown failure, serially and under pytest-xdist."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.checks import record, report

pytest_plugins = ["pytester"]


def a_record(test: str, outcome: str = "passed", bundle: Path | None = None) -> dict:
    rec = record.Record(test, lab=True, started_at=1_700_000_000.0)
    rec.add_report("setup", "passed", 0.5)
    rec.add_report("call", outcome, 2.0, "AssertionError: boom <b>" if outcome == "failed"
                   else "")
    rec.add_report("teardown", "passed", 1.0)
    rec.phases = [("agent ready", 0.1), ("drained", 0.9)]
    rec.bundle = str(bundle) if bundle else None
    return rec.to_dict()


ENV = {"run_id": "ab12cd", "worker": None, "target": "ssh://lab@127.0.0.1:55817",
       "accel": "tcg", "timeout_scale": 4.0, "kernel": "6.1.0-28-amd64",
       "crun": "crun version 1.8.1", "java": 'openjdk version "17.0.13"',
       "nomad": "Nomad v1.11.3", "plugin": "nomad-driver-java-crun v0.1.0"}


class Page(HTMLParser):
    """The links and the text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data):
        self.text.append(data)


def test_index_shows_environment_outcomes_phases_and_relative_links_into_bundles(tmp_path):
    bundle = tmp_path / "diag" / "tests_e2e_test_x.py_test_fails"
    bundle.mkdir(parents=True)
    for name in ("record.txt", "record.json", "agent.log", "odd name#1.txt"):
        (bundle / name).write_text(name)
    run = report.RunReport("tests/e2e -k x")
    run.add(a_record("tests/e2e/test_x.py::test_ok"), ENV)
    run.add(a_record("tests/e2e/test_x.py::test_fails[<script>]", "failed", bundle), ENV)
    index = run.write(tmp_path, "ab12cd", 1)

    html = index.read_text()
    page = Page(html)
    text = "".join(page.text)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "AssertionError: boom &lt;b&gt;" in html
    for key in ("target", "accel", "kernel", "crun", "java", "nomad", "plugin", "run ids"):
        assert key in text
    assert "ssh://lab@127.0.0.1:55817" in text and "Nomad v1.11.3" in text and "ab12cd" in text
    assert "1 failed, 1 passed" in text
    assert "agent ready 0.1s | drained 0.9s" in text
    files = [link for link in page.links if not link.startswith("#")]
    assert files[0] == "diag/tests_e2e_test_x.py_test_fails/record.txt"  # the summary table
    for link in files:  # relative, and each one opens a file of the bundle
        assert not link.startswith("/") and (tmp_path / _unquote(link)).exists(), link
    assert "diag/tests_e2e_test_x.py_test_fails/odd%20name%231.txt" in files
    # The failed test's section is open, the passed one's folded.
    assert re.search(r'<details class="test failed" id="p1-t1" open>', html)
    assert re.search(r'<details class="test passed" id="p1-t0">', html)


def _unquote(link: str) -> str:
    from urllib.parse import unquote

    return unquote(link)


def test_passes_with_one_report_id_make_one_page_and_a_new_id_starts_over(tmp_path):
    first = report.RunReport("tests/e2e -n 2 -m 'not exclusive'")
    first.add(a_record("tests/e2e/test_a.py::test_parallel"), {**ENV, "worker": "gw0"})
    first.write(tmp_path, "run1", 0)
    second = report.RunReport("tests/e2e -m exclusive")
    second.add(a_record("tests/e2e/test_b.py::test_exclusive", "failed"), ENV)
    text = "".join(Page(second.write(tmp_path, "run1", 1).read_text()).text)
    assert "test_parallel" in text and "test_exclusive" in text
    assert "pass 1: tests/e2e -n 2 -m 'not exclusive'" in text
    assert "pass 2: tests/e2e -m exclusive" in text
    assert "ab12cd (gw0)" in text  # every process's run id
    assert "1 failed, 1 passed in 2 pass(es)" in text

    other = report.RunReport("tests/e2e")
    other.add(a_record("tests/e2e/test_c.py::test_next_run"), ENV)
    text = "".join(Page(other.write(tmp_path, "run2", 0).read_text()).text)
    assert "test_next_run" in text and "test_parallel" not in text
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["run1.json",
                                                                        "run2.json"]


def test_report_ids_that_share_a_file_name_do_not_merge(tmp_path):
    report.add_pass(tmp_path, "a/b", {"records": [a_record("t::one")]})
    run = report.add_pass(tmp_path, "a_b", {"records": [a_record("t::two")]})
    assert [r["test"] for p in run["passes"] for r in p["records"]] == ["t::two"]


def test_only_the_newest_records_files_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "KEEP", 3)
    for i in range(5):
        report.add_pass(tmp_path, f"run{i}", {"records": []})
        path = tmp_path / "records" / f"run{i}.json"
        import os

        os.utime(path, (1000 + i, 1000 + i))
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [
        "run2.json", "run3.json", "run4.json"]


def test_a_report_id_cannot_write_outside_the_records_folder(tmp_path):
    report.add_pass(tmp_path, "../../etc/passwd", {"records": []})
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["etc_passwd.json"]


# -- a failing inner run ---------------------------------------------------------------------
INNER = '''
import pytest


@pytest.fixture
def broken():
    raise RuntimeError("LAB-SETUP-FAILURE: the agent did not start")


@pytest.fixture
def dirty():
    yield
    raise RuntimeError("LAB-TEARDOWN-FAILURE: left on the lab host")


def test_passes():
    pass


def test_body_fails():
    assert 1 == 2, "LAB-BODY-FAILURE"


def test_setup_fails(broken):
    pass


def test_teardown_fails(dirty):
    pass


@pytest.mark.parametrize("name", ["<b>&"])
def test_escaped(name):
    assert name == "LAB-ESCAPED-FAILURE"
'''


def inner_run(pytester, *args: str) -> tuple[Path, object]:
    pytester.makepyfile(test_inner=INNER)
    reports = pytester.path / "out"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lab-reports",
                                           str(reports), *args)
    result.assert_outcomes(passed=2, failed=2, errors=2)
    return reports, result


def check_index_and_bundles(reports: Path) -> None:
    html = (reports / "index.html").read_text()
    page = Page(html)
    text = "".join(page.text)
    assert "<b>&" not in html and "test_escaped[&lt;b&gt;&amp;]" in html
    bundles = {}
    for test, outcome, when in [("test_body_fails", "failed", "call"),
                                ("test_setup_fails", "error", "setup"),
                                ("test_teardown_fails", "error", "teardown")]:
        nodeid = f"test_inner.py::{test}"
        assert re.search(rf'class="{outcome}">{outcome}</span> {nodeid} ', html), test
        link = f"diag/test_inner.py_{test}/record.txt"
        assert link in page.links, (test, page.links)
        record_txt = (reports / link).read_text()  # the link opens the bundle's record
        assert record_txt.startswith(f"test      {nodeid}\noutcome   {outcome}")
        data = json.loads((reports / link).with_suffix(".json").read_text())
        assert data["reports"][when]["outcome"] == "failed"
        bundles[test] = data
    assert "LAB-SETUP-FAILURE" in bundles["test_setup_fails"]["reports"]["setup"]["error"]
    assert "call" not in bundles["test_setup_fails"]["reports"]
    assert "LAB-BODY-FAILURE" in bundles["test_body_fails"]["reports"]["call"]["error"]
    assert "LAB-TEARDOWN-FAILURE" in bundles["test_teardown_fails"]["reports"]["teardown"][
        "error"]
    assert "test_inner.py::test_passes" in text
    assert not (reports / "diag" / "test_inner.py_test_passes").exists()
    assert "2 error, 2 failed, 1 passed" in text  # per test: test_teardown_fails is an error


def test_a_failing_inner_run_gets_an_index_with_links_to_a_record_per_failure(pytester):
    reports, result = inner_run(pytester)
    check_index_and_bundles(reports)
    out = result.stdout.str()
    for test in ("test_setup_fails", "test_body_fails", "test_teardown_fails"):
        assert f"diagnostics bundle: {reports / 'diag' / f'test_inner.py_{test}'}" in out, test
    result.stdout.fnmatch_lines([f"lab report: {reports / 'index.html'}"])


def test_under_xdist_the_controller_writes_the_index_from_the_workers_records(pytester):
    reports, _ = inner_run(pytester, "-n", "2")
    check_index_and_bundles(reports)
    (records,) = (reports / "records").iterdir()  # the controller's only: workers write none
    envs = json.loads(records.read_text())["passes"][0]["envs"]
    assert sorted(env["worker"] for env in envs) == ["gw0", "gw1"]


LAB_TEST = '''
import pytest


@pytest.fixture
def lab_host():  # stands in for the lab: the test counts as one that uses it
    return None


def test_uses_the_lab(lab_host):
    assert lab_host == "LAB-FAILURE"
'''


@pytest.mark.parametrize("source, nested, written", [
    (INNER, False, False),  # a unit-test run (no test uses the lab) leaves reports/ alone
    (LAB_TEST, False, True),  # a lab run writes the checkout's reports/index.html
    (LAB_TEST, True, False),  # a run inside another leaves the outer run's page alone
], ids=["unit-run", "lab-run", "nested-lab-run"])
def test_a_report_by_default_only_for_a_lab_run_that_is_not_nested(pytester, monkeypatch,
                                                                    source, nested, written):
    pytester.makepyfile(test_inner=source)
    monkeypatch.setenv("LAB_ROOT", str(pytester.path))  # the checkout's reports/ is here
    monkeypatch.delenv("LAB_REPORTING_PID", raising=False)  # this unit run's own
    if nested:
        monkeypatch.setenv("LAB_REPORTING_PID", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 1
    assert (pytester.path / "reports" / "index.html").exists() == written
    if source == LAB_TEST:  # the failure's record is in its bundle either way
        assert (pytester.path / "reports" / "diag" / "test_inner.py_test_uses_the_lab" /
                "record.txt").exists()


XFAIL_INNER = '''
import pytest


@pytest.fixture
def dirty():
    yield
    pytest.fail("LAB-LEFTOVER: netns 1234 left on the lab host", pytrace=False)


@pytest.fixture
def broken():
    raise RuntimeError("LAB-SETUP-FAILURE: the agent did not start")


@pytest.mark.xfail(strict=True, reason="a known bug of the thing under test")
def test_known_bug_with_leftovers(dirty):
    assert False, "the known bug"


@pytest.mark.xfail(strict=True, reason="a known bug of the thing under test")
def test_known_bug_whose_agent_did_not_start(broken):
    assert False, "the known bug"


@pytest.mark.xfail(strict=True, reason="a known bug of the thing under test")
def test_known_bug_clean(request):
    assert False, "the known bug"


def test_imperative_xfail_in_the_body(request):
    pytest.xfail("decided at run time")


@pytest.fixture
def decides():
    pytest.xfail("decided in set-up")


def test_imperative_xfail_in_setup(decides):
    pass
'''


def test_an_expected_failure_covers_the_body_only_not_its_setup_or_leftovers(pytester):
    # pytest turns any exception of an xfail-marked test into "xfailed", its teardown's too:
    # a leftover found after a known bug would be counted as a second expected failure.
    pytester.makepyfile(test_inner=XFAIL_INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lab-reports",
                                           str(pytester.path / "out"), "-rA")
    result.assert_outcomes(xfailed=4, errors=2)  # leftovers' body, clean, 2 imperative
    result.stdout.re_match_lines([r"ERROR .*::test_known_bug_with_leftovers - Failed: LAB-LEFT",
                                  r"ERROR .*::test_known_bug_whose_agent_did_not_start - "
                                  r"RuntimeError"], consecutive=False)
