"""provision-once.sh: the guest set-up runs once per script version and boot, then is read."""

from __future__ import annotations

import os
import subprocess

from lab.core.config import ROOT

SCRIPT = (ROOT / "lab" / "remote" / "scripts" / "provision-once.sh").read_text()


def provision(tmp_path, sha: str, body: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAB_PROVISION_STAMP": str(tmp_path / "stamp")}
    return subprocess.run(["bash", "-c", SCRIPT, "provision-once.sh", sha, body], env=env,
                          capture_output=True, text=True, timeout=20)


def test_runs_once_then_prints_the_recorded_result(tmp_path):
    body = f'echo run >> {tmp_path}/runs; echo checking; echo \'{{"crun": "1.8.1"}}\''
    first = provision(tmp_path, "aaa", body)
    assert first.returncode == 0 and first.stdout.splitlines()[-1] == '{"crun": "1.8.1"}'
    again = provision(tmp_path, "aaa", body)
    assert again.returncode == 0 and again.stdout.strip() == '{"crun": "1.8.1"}'
    assert (tmp_path / "runs").read_text() == "run\n", "the second call must not run it"
    provision(tmp_path, "bbb", body)
    assert (tmp_path / "runs").read_text() == "run\nrun\n", "a new script version runs again"


def test_a_failing_set_up_is_not_recorded_and_says_why(tmp_path):
    res = provision(tmp_path, "aaa", "echo 'crun missing' >&2; exit 1")
    assert res.returncode == 1 and "crun missing" in res.stdout
    assert not (tmp_path / "stamp").exists()
