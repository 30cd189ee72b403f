"""run_together: sections run at once in one round trip; outputs and exit codes come back in
order and apart; a batch cut short is an error naming what is missing (run with local bash)."""

from __future__ import annotations

import subprocess

import pytest

from lab.core.errors import LabError
from lab.remote import batch
from lab.remote.host import CommandResult


class LocalHost:
    """Runs the batch with this machine's bash: the script itself is what is under test."""

    class spec:  # noqa: N801 - mimics SSHSpec's attribute
        url = "ssh://local"

    def __init__(self, sections_kept: int | None = None):
        self.sections_kept, self.calls = sections_kept, 0

    def run(self, cmd, *, sudo=False, check=True, timeout=None):
        self.calls += 1
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=20)
        out = proc.stdout
        if self.sections_kept is not None:  # the connection dropped after that many sections
            lines = out.splitlines(keepends=True)
            ends = [i for i, line in enumerate(lines) if line.startswith("__lab_section_end_")]
            out = "".join(lines[:ends[self.sections_kept - 1] + 1])
        return CommandResult(cmd, proc.returncode, out, proc.stderr)


def test_each_section_gets_its_own_output_and_exit_code_in_one_round_trip():
    host = LocalHost()
    results = batch.run_together(host, {
        "first": "echo one; echo two",
        "silent": "true",
        "failing": "echo partial; echo oops >&2; exit 3",
        "no-newline": "printf 'x y'",
        # A case statement: bash 5.1 (bullseye) cannot parse one inside <( ... ); the batch
        # defines each section as a function (checked on the bullseye lab: `bash -n`).
        "case": "case x in x) echo matched ;; *) echo no ;; esac",
    })
    assert host.calls == 1
    assert {k: (r.rc, r.stdout) for k, r in results.items()} == {
        "first": (0, "one\ntwo\n"), "silent": (0, ""), "failing": (3, "partial\n"),
        "no-newline": (0, "x y"), "case": (0, "matched\n")}
    assert "oops" in results["failing"].stderr


def test_sections_run_at_the_same_time(tmp_path):
    # The first section waits for a file only the second one creates: run one after the
    # other, the first would wait out its 10 s and fail.
    flag = tmp_path / "flag"
    results = batch.run_together(LocalHost(), {
        "waits": f"for i in $(seq 100); do [ -e {flag} ] && exit 0; sleep 0.1; done; exit 1",
        "creates": f"touch {flag}",
    })
    assert results["waits"].rc == 0, "the sections ran one after the other"


def test_a_section_that_exits_or_sets_errexit_does_not_end_the_others():
    results = batch.run_together(LocalHost(), {
        "errexit": "set -e; false; echo never",
        "after": "echo still here",
    })
    assert (results["errexit"].rc, results["errexit"].stdout) == (1, "")
    assert results["after"].stdout == "still here\n"


def test_a_batch_cut_short_names_the_sections_without_a_result():
    with pytest.raises(LabError, match=r"no result for b, c .*lab.status"):
        batch.run_together(LocalHost(sections_kept=1),
                           {"a": "echo a", "b": "echo b", "c": "echo c"})


def test_more_sections_than_file_descriptors_is_refused():
    with pytest.raises(ValueError, match="at most 7"):
        batch.run_together(LocalHost(), {str(i): "true" for i in range(8)})
