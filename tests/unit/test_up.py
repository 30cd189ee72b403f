"""lab.up's vm step: a running VM that the step may recreate is leased first, and that lease
serves the steps after it unless the VM was restarted."""

from __future__ import annotations

import contextlib
import os
import subprocess
from types import SimpleNamespace

import pytest

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.provision import box, hostsetup, vm
from lab.remote.host import CommandResult
from lab.remote.layout import PLUGIN_BINARY, SHIM_RELPATH
from lab.workflows import up


class FakeVM:
    def __init__(self, kept_running: bool):
        self.kept_running_after = kept_running
        self.kept_running = False

    def answers(self):
        return True

    def ssh_spec(self):
        return SimpleNamespace(port=2222)

    def up(self):
        self.kept_running = self.kept_running_after


@pytest.mark.parametrize("kept_running, leases", [
    (True, ["take", "release"]),  # one lease for the vm step and all after it
    (False, ["take", "release", "take", "release"]),  # restarted: its lease ended, take anew
])
def test_the_vm_steps_lease_serves_the_rest_unless_the_vm_restarted(monkeypatch, kept_running,
                                                                     leases):
    events: list[str] = []

    @contextlib.contextmanager
    def leased(config, what, out):
        events.append("take")
        yield SimpleNamespace(name="host")
        events.append("release")

    monkeypatch.setattr(vm, "ssh_banner", lambda port: "SSH-2.0-OpenSSH_9.2")
    monkeypatch.setattr(vm, "VagrantVM", lambda config, out: FakeVM(kept_running))
    monkeypatch.setattr(hostsetup, "ensure_host", lambda out: None)
    monkeypatch.setattr(box, "ensure_box", lambda config, out: None)
    monkeypatch.setattr(up, "build_all", lambda config, out: None)
    monkeypatch.setattr(up.target, "leased", leased)
    monkeypatch.setattr(up, "check", lambda host, config: events.append("check") or
                        up.Checked({}, ({}, []), {}))
    monkeypatch.setattr(up, "push", lambda host, config, out, read: events.append("push") or [])
    monkeypatch.setattr(up, "verify", lambda host, found, out, run_binaries:
                        events.append("verify"))
    up.up(SimpleNamespace(is_vagrant=True), out=lambda line: None)
    assert [e for e in events if e in ("take", "release")] == leases
    assert events[-4:] == ["check", "push", "verify", "release"]


class LocalBash:
    """Runs what lab.up sends to the lab host with this machine's bash, counting round trips."""

    spec = SimpleNamespace(url="ssh://local")

    def __init__(self, env: dict):
        self.env, self.calls = env, 0

    def run(self, cmd, *, sudo=False, check=True, timeout=None):
        self.calls += 1
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                              env=self.env, timeout=60)
        return CommandResult(cmd, proc.returncode, proc.stdout, proc.stderr)


def test_the_checks_run_the_guest_set_up_read_the_files_and_scan_in_one_round_trip(tmp_path):
    """The batch lab.up sends, run by real bash: the guest set-up's result (from a stand-in
    guest-setup.sh), the files' sums (none pushed here) and the leftover scan of this
    machine (which has no lab traces); then, with a failing set-up, its words in the error."""
    (tmp_path / "provision").mkdir()
    setup = tmp_path / "provision" / "guest-setup.sh"
    setup.write_text('echo checking; echo \'{"kernel": "6.1.0-test", "cgroup": "v2"}\'\n')
    (tmp_path / "build" / "jars").mkdir(parents=True)
    for name in ("nomad", PLUGIN_BINARY, SHIM_RELPATH, "jars/hello.jar"):
        (tmp_path / "build" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "build" / name).write_text(name)
    proc_sys = tmp_path / "proc-sys" / "kernel"  # the hung-task fault's sysctl, at its default
    proc_sys.mkdir(parents=True)
    (proc_sys / "hung_task_timeout_secs").write_text("120\n")
    config = LabConfig(root=tmp_path)
    host = LocalBash({**os.environ, "LAB_PROVISION_STAMP": str(tmp_path / "stamp"),
                      "LAB_PROC_SYS": str(tmp_path / "proc-sys")})
    checked = up.check(host, config)
    assert host.calls == 1
    assert checked.provision == {"kernel": "6.1.0-test", "cgroup": "v2"}
    assert checked.files == ({}, [])
    # A developer's machine may run a JVM of its own (an IDE): the scan would name it.
    assert {k: v for k, v in checked.leftovers.items() if k != "java_process"} == {}
    setup.write_text("echo 'crun is missing: apt-get install crun' >&2; exit 1\n")
    with pytest.raises(LabError, match="not fit for the lab:\ncrun is missing"):
        up.check(host, config)
