"""lab.nomad.events: one reading of a task event's text, whatever field carries it."""

from __future__ import annotations

import pytest

from lab.nomad import events

DRIVER_FAILURE = {
    "Type": "Driver Failure", "Time": 1_700_000_002_500_000_000,
    "DisplayMessage": "node problem: java runtime not usable: /usr/bin/java: no such file",
    "DriverError": "node problem: java runtime not usable: /usr/bin/java: no such file",
    "Details": {"driver_error": "node problem: java runtime not usable: /usr/bin/java: "
                                "no such file", "fails_task": "true"},
}
DOWNLOAD = {"Type": "Failed Artifact Download", "Time": 1_700_000_000_000_000_000,
            "DisplayMessage": "", "DownloadError": "GET http://x/y.jar: short write",
            "Details": {"download_error": "GET http://x/y.jar: short write"}}
RESTARTING = {"Type": "Restarting", "Time": 1_700_000_003_000_000_000,
              "DisplayMessage": "Task restarting in 5s",
              "RestartReason": "Restart within policy",
              "Details": {"restart_reason": "Restart within policy", "start_delay": "5000000000"}}
TERMINATED = {"Type": "Terminated", "Time": 1_700_000_004_000_000_000, "ExitCode": 137,
              "Details": {"exit_code": "137", "oom_killed": "true"}}


def test_text_joins_every_field_a_user_reads_each_text_once():
    assert events.text(DRIVER_FAILURE) == \
        "node problem: java runtime not usable: /usr/bin/java: no such file"
    assert events.text(DOWNLOAD) == "GET http://x/y.jar: short write"
    assert events.text(RESTARTING) == \
        "Task restarting in 5s | Restart within policy | 5000000000"


def test_text_leaves_flags_out_and_an_event_without_words_is_empty():
    assert events.text(TERMINATED) == "137"
    assert events.text({"Type": "Received"}) == ""
    assert events.line({"Type": "Received"}) == "Received"
    assert events.line(DOWNLOAD) == "Failed Artifact Download: GET http://x/y.jar: short write"


def test_describe_lists_one_line_per_event():
    assert events.describe([{"Type": "Received"}, DOWNLOAD]).splitlines() == [
        "Received", "Failed Artifact Download: GET http://x/y.jar: short write"]
    assert events.describe([]) == "(no events)"


def test_first_last_of_type_and_containing():
    evs = [{"Type": "Restarting", "Time": 1}, DRIVER_FAILURE, RESTARTING]
    assert events.types(evs) == ["Restarting", "Driver Failure", "Restarting"]
    assert events.last(evs, "Restarting") is RESTARTING
    assert events.first(evs, "Restarting") is evs[0]
    assert events.of_type(evs, "Started") == []
    assert events.containing(evs, "node problem") == [DRIVER_FAILURE]


def test_last_fails_naming_the_events_there_are():
    with pytest.raises(AssertionError, match=r"no .Started. event among:\n\s*Driver Failure: node"):
        events.last([DRIVER_FAILURE], "Started")


def test_times_are_seconds():
    assert events.seconds(DOWNLOAD) == 1_700_000_000.0
    assert events.seconds_between(DOWNLOAD, DRIVER_FAILURE) == 2.5
