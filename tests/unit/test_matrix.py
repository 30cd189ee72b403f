"""`invoke matrix`'s table from JUnit XML fixtures (tests/unit/data/matrix), and its lab list."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.provision.labs import LabRefused, LabSpec
from lab.workflows import matrix

DATA = Path(__file__).parent / "data" / "matrix"
SMOKE = "test_smoke::test_hello_jar_runs_and_its_output_comes_back_through_the_logs_api"
ASKED = "test_cgroup_mode::test_the_lab_boots_the_cgroup_mode_it_asked_for"


def _run(lab: str, **kw) -> matrix.LabRun:
    path = DATA / f"junit-{lab}.xml"
    run = matrix.LabRun(LabSpec.parse(lab), junit=path, **kw)
    run.cells = matrix.read_junit(path)
    return run


def test_read_junit_outcomes_durations_and_teardown_errors():
    cells = matrix.read_junit(DATA / "junit-bookworm.xml")
    assert list(cells)[0] == ASKED
    assert cells[SMOKE] == matrix.Cell("pass", 30.125)
    assert cells["test_cgroup_mode::test_on_cgroup_v1_a_job_is_not_placed"].outcome == "skip"
    # an expected failure ran and showed its known bug: not a skip
    assert cells["test_operators::test_none_network_task_sees_only_loopback"].outcome == "xfail"
    # passed its call, failed its teardown: counts as failed
    assert cells["test_signals::test_sigterm_runs_shutdown_hooks"].outcome == "fail"
    assert "left on the lab host" in cells["test_signals::test_sigterm_runs_shutdown_hooks"].message


def test_table_has_a_row_per_test_a_column_per_lab_and_marks_lab_specific_failures():
    runs = [_run("bullseye", up_seconds=150, test_seconds=60), _run("bookworm"),
            _run("bookworm-v1"),
            matrix.LabRun(LabSpec.parse("bookworm+bpo"), skipped="not implemented yet")]
    table = matrix.render_table(runs)
    lines = table.splitlines()
    header = lines[0].split()
    assert header == ["test", "bullseye", "bookworm", "bookworm-v1"]  # no column for bpo
    smoke = next(line for line in lines if SMOKE in line)
    assert smoke.startswith(matrix.MARK)                      # fails on bullseye only
    assert smoke.split()[2:] == ["FAIL", "41.2s", "pass", "30.1s", "skip"]
    asked = next(line for line in lines if ASKED in line)
    assert not asked.startswith(matrix.MARK)
    assert asked.split()[1:] == ["pass", "0.4s", "pass", "0.3s", "pass", "0.5s"]
    # a test only one lab ran: the others show '-'
    sigterm = next(line for line in lines if "test_sigterm" in line)
    assert sigterm.split()[1:] == ["-", "FAIL", "3.0s", "-"]
    # failing everywhere it ran is not lab-specific
    assert not sigterm.startswith(matrix.MARK)
    assert "bullseye: 1 passed, 1 failed, 2 skipped; up 150s, tests 60s" in table
    none = next(line for line in lines if "test_none_network" in line)
    assert none.split()[1:] == ["-", "xfail", "32.7s", "-"]
    assert "bookworm: 2 passed, 1 failed, 2 skipped, 1 xfailed; " in table
    assert "bookworm-k-bpo: not run: not implemented yet" in table
    assert table.splitlines()[-1] == f"{matrix.MARK} fails on some labs and passes on others: " \
                                     f"{SMOKE}"


def test_a_lab_that_did_not_come_up_keeps_its_column():
    broken = matrix.LabRun(LabSpec.parse("trixie"), error="vagrant up failed")
    table = matrix.render_table([_run("bookworm"), broken])
    smoke = next(line for line in table.splitlines() if SMOKE in line)
    assert smoke.split()[-1] == "n/a"
    assert "trixie: 0 passed, 0 failed, 0 skipped; up 0s, tests 0s; ERROR: vagrant up failed" \
        in table


def test_lab_list_default_and_parsed():
    assert [s.id for s in matrix.parse_labs(None)] == [
        "bullseye", "bookworm", "bookworm-k-bpo", "trixie", "bookworm-v1"]
    assert [s.id for s in matrix.parse_labs("trixie, bookworm-v1,trixie")] == [
        "trixie", "bookworm-v1"]
    with pytest.raises(LabRefused, match="names no release"):
        matrix.parse_labs("-v1")


def test_pytest_args():
    args = matrix.pytest_args("smoke or cgroup_mode", "not slow", Path("reports/junit-x.xml"))
    assert args == ["tests/e2e", "--junitxml=reports/junit-x.xml", "-k", "smoke or cgroup_mode",
                    "-m", "not slow"]


def test_a_known_bug_on_one_lab_and_a_failure_on_another_stands_out():
    fail, xfail, skip = (matrix.Cell(o, 1.0) for o in ("fail", "xfail", "skip"))
    assert matrix.stands_out([fail, xfail])
    assert not matrix.stands_out([xfail, skip, None])
    assert not matrix.stands_out([fail, skip])
