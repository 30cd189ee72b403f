"""tasks.py's argument handling that needs no lab: the repeat options of `invoke test`."""

from __future__ import annotations

import pytest
from invoke import Exit

import tasks


def test_count_runs_each_test_n_times_with_a_test_id_per_run():
    assert tasks._repeat_args(20, False) == ["--count=20", "--repeat-scope=function"]


def test_until_fail_stops_at_the_first_failure_within_count_or_the_bound():
    assert tasks._repeat_args(5, True) == ["--count=5", "--repeat-scope=function", "-x"]
    assert tasks._repeat_args(0, True) == [f"--count={tasks.UNTIL_FAIL_MAX}",
                                           "--repeat-scope=function", "-x"]


def test_no_repeat_options_by_default_and_a_negative_count_is_refused():
    assert tasks._repeat_args(0, False) == [] and tasks._repeat_args(1, False) == []
    with pytest.raises(Exit, match="--count must be a positive number"):
        tasks._repeat_args(-1, False)
