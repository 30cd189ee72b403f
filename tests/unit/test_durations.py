"""durations: each test's recorded time, merged run after run, and the longest-first order that
balances a parallel run."""

from __future__ import annotations

import json

from lab.checks import durations


def test_save_merges_with_the_earlier_runs_and_load_reads_it_back(tmp_path):
    path = tmp_path / ".lab" / durations.FILE_NAME
    durations.save(path, {"t.py::a": 12.345, "t.py::b": 3.0})
    durations.save(path, {"t.py::b": 4.0, "t.py::c": 1.0})
    assert durations.load(path) == {"t.py::a": 12.35, "t.py::b": 4.0, "t.py::c": 1.0}
    assert [p.name for p in path.parent.iterdir()] == [durations.FILE_NAME]  # no temp file left


def test_nothing_measured_writes_nothing(tmp_path):
    path = tmp_path / durations.FILE_NAME
    durations.save(path, {})
    assert not path.exists()


def test_a_missing_or_damaged_file_reads_as_no_durations(tmp_path):
    path = tmp_path / durations.FILE_NAME
    assert durations.load(path) == {}
    path.write_text('{"t.py::a": 1.')  # cut short by a killed run
    assert durations.load(path) == {}
    path.write_text(json.dumps(["not", "a", "map"]))
    assert durations.load(path) == {}
    path.write_text(json.dumps({"t.py::a": 2, "t.py::b": "slow"}))
    assert durations.load(path) == {"t.py::a": 2.0}


def test_longest_first_puts_unknown_tests_at_the_median_and_keeps_ties_in_order():
    recorded = {"a": 5.0, "b": 50.0, "c": 20.0, "d": 20.0}
    order = durations.longest_first(["a", "new1", "c", "b", "d", "new2"], recorded,
                                    key=lambda name: name)
    # median of 5, 20, 20, 50 is 20: the new tests rank with c and d, in collection order
    assert order == ["b", "new1", "c", "d", "new2", "a"]


def test_longest_first_without_any_record_keeps_the_collection_order():
    assert durations.longest_first(["x", "y", "z"], {}, key=str) == ["x", "y", "z"]


def test_recorder_sums_the_phases_of_tests_whose_body_ran():
    rec = durations.Recorder()
    for nodeid, when, outcome, secs in [
            ("t.py::ok", "setup", "passed", 10.0), ("t.py::ok", "call", "passed", 5.0),
            ("t.py::ok", "teardown", "passed", 2.5),
            ("t.py::bad", "setup", "passed", 1.0), ("t.py::bad", "call", "failed", 30.0),
            ("t.py::bad", "teardown", "passed", 1.0),
            ("t.py::skipped", "setup", "skipped", 0.01),
            ("t.py::teardown_only", "teardown", "passed", 0.2)]:
        rec.add(nodeid, when, outcome, secs)
    assert rec.measured() == {"t.py::ok": 17.5, "t.py::bad": 32.0}


def test_for_workers_pairs_the_longest_with_the_shortest_of_the_first_two_rounds():
    # xdist gives each of 2 workers two consecutive tests first: gw0 "a" and "d", gw1 "b" and "c"
    assert durations.for_workers(list("abcdefg"), 2) == list("adbcefg")
    assert durations.for_workers(list("abcdefgh"), 3) == list("afbecdgh")


def test_for_workers_leaves_a_serial_run_or_a_short_list_alone():
    assert durations.for_workers(list("abcd"), 1) == list("abcd")
    assert durations.for_workers(list("abc"), 2) == list("abc")
