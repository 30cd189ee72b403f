"""VagrantVM against a fake virsh and a fake vagrant (fast path, stale domains, env, errors),
and the host prerequisites it relies on (lab/provision/hostsetup.py)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lab.core.errors import LabTimeout
from lab.provision import hostsetup
from lab.provision import vm as vm_mod
from lab.provision.accel import Accel
from lab.provision.box import Box


class Config:
    def __init__(self, root: Path):
        self.root = root
        self.state_dir = root / ".lab"
        self.cache_dir = root / "cache"
        self.cpus = 2
        self.memory_mb = 3072
        self.box_release = "bookworm"
        self.accel = "auto"


class FakeVirsh:
    """Answers `virsh -c URI <verb> ...` from a dict of domain name -> (state, uuid)."""

    def __init__(self, domains: dict[str, tuple[str, str]]):
        self.domains = domains
        self.calls: list[list[str]] = []

    def __call__(self, cmd, **kw):
        verb, args = cmd[3], cmd[4:]
        self.calls.append([verb, *args])
        name = args[-1] if args else ""
        if verb in ("domstate", "domuuid"):
            if name not in self.domains:
                return subprocess.CompletedProcess(cmd, 1, "", f"failed to get domain '{name}'")
            state, uuid = self.domains[name]
            return subprocess.CompletedProcess(cmd, 0, (state if verb == "domstate" else uuid)
                                               + "\n", "")
        if verb == "undefine":
            self.domains.pop(args[0], None)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]


BOX = Box("nomad-lab/debian-bookworm-abc", "bookworm", "abc", Path("/c/b.box"),
          Path("/c/vmlinuz"), Path("/c/initrd.img"))
TCG = Accel("tcg", 4.0, "test", "test")


@pytest.fixture
def make_vm(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant-home"))

    def make(domains=None, banner="SSH-2.0-OpenSSH_9.2"):
        virsh = FakeVirsh(domains or {})
        vm = vm_mod.VagrantVM(Config(tmp_path), out=lambda _: None, run=virsh)
        vagrant_calls: list[tuple[str, ...]] = []
        monkeypatch.setattr(vm, "prepare", lambda: (BOX, TCG))
        monkeypatch.setattr(vm, "_vagrant", lambda *a, env=None: vagrant_calls.append(a) or "")
        # The guest's sshd answers with `banner` until vagrant has run, then it is up.
        monkeypatch.setattr(vm_mod, "ssh_banner", lambda port, *a, **k:
                            "SSH-2.0-OpenSSH_9.2" if vagrant_calls else banner)
        monkeypatch.setattr(vm_mod, "port_is_free", lambda port: True)
        return vm, virsh, vagrant_calls
    return make


def _vagrant_knows(vm, uuid: str) -> None:
    id_file = vm.state_dir / "vagrant" / "machines" / vm.name / "libvirt" / "id"
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(uuid)


def test_up_right_after_answers_does_not_ask_sshd_again(make_vm, monkeypatch):
    """lab.up asks whether the VM answers (to lease it first), then up() would ask again:
    each banner is an sshd fork and re-exec, ~0.5 s under TCG."""
    vm, virsh, vagrant = make_vm()
    virsh.domains[vm.name] = ("running", "U1")
    _vagrant_knows(vm, "U1")
    vm._save_state(box=BOX.name, accel="tcg")
    asked: list[int] = []
    monkeypatch.setattr(vm_mod, "ssh_banner", lambda port, *a, **k: asked.append(port) or
                        "SSH-2.0-OpenSSH_9.2")
    assert vm.answers()
    vm.up()
    assert len(asked) == 1 and vagrant == [] and vm.kept_running
    vm._answered_at -= 60  # a minute later, up() asks again
    vm.up()
    assert len(asked) == 2


def test_name_is_stable_per_checkout(tmp_path):
    a = vm_mod.vm_name_for(tmp_path / "a")
    assert a == vm_mod.vm_name_for(tmp_path / "a")
    assert a != vm_mod.vm_name_for(tmp_path / "b")
    assert a.startswith("nomad-lab-") and len(a) == len("nomad-lab-") + 8


def test_ssh_port_is_chosen_once_and_persisted(make_vm):
    vm, _, _ = make_vm()
    first = vm.ssh_spec()
    assert first.host == "127.0.0.1" and first.user == "lab"
    assert first.key_file == vm.cache_dir / "ssh" / "id_ed25519"
    again = vm_mod.VagrantVM(vm.config, out=lambda _: None, run=vm.run).ssh_spec()
    assert again.port == first.port
    assert json.loads(vm.state_file.read_text())["ssh_port"] == first.port


def test_up_on_a_running_vm_does_not_call_vagrant(make_vm, tmp_path):
    vm, virsh, vagrant = make_vm()
    virsh.domains[vm.name] = ("running", "U1")
    _vagrant_knows(vm, "U1")
    vm._save_state(box=BOX.name, accel="tcg")
    spec = vm.up()
    assert vagrant == []
    assert "undefine" not in virsh.verbs()
    assert spec.port == vm.ssh_spec().port


def test_up_creates_when_missing_and_records_settings(make_vm):
    vm, virsh, vagrant = make_vm()
    vm.up()
    assert vagrant == [("up", "--provider", "libvirt")]
    saved = json.loads((vm.state_dir / "vagrant-env.json").read_text())
    assert saved["LAB_BOX_NAME"] == BOX.name and saved["LAB_VM_NAME"] == vm.name
    assert saved["LAB_MEMORY"] == "3072" and saved["LAB_ACCEL"] == "tcg"
    assert (vm.state_dir / "ssh_config").read_text().startswith("Host nomad-lab\n")


def test_up_removes_a_stale_domain_vagrant_forgot(make_vm):
    vm, virsh, vagrant = make_vm()
    virsh.domains[vm.name] = ("running", "OLD")  # no Vagrant record in this checkout
    vm.up()
    assert ["undefine", vm.name, "--managed-save", "--snapshots-metadata"] in virsh.calls
    assert ["vol-delete", "--pool", "default", f"{vm.name}.img"] in virsh.calls
    assert vagrant == [("up", "--provider", "libvirt")]


def test_up_recreates_when_the_box_changed(make_vm):
    vm, virsh, vagrant = make_vm()
    virsh.domains[vm.name] = ("running", "U1")
    _vagrant_knows(vm, "U1")
    vm._save_state(box="nomad-lab/debian-bookworm-old", accel="tcg")
    vm.up()
    assert vagrant == [("destroy", "--force"), ("up", "--provider", "libvirt")]


def test_up_boots_when_running_but_ssh_silent(make_vm):
    vm, virsh, vagrant = make_vm(banner="")
    virsh.domains[vm.name] = ("shut off", "U1")
    _vagrant_knows(vm, "U1")
    vm._save_state(box=BOX.name, accel="tcg")
    vm.up()
    assert vagrant == [("up", "--provider", "libvirt")]


def test_up_fails_naming_the_vm_when_sshd_never_answers(make_vm, monkeypatch):
    vm, virsh, vagrant = make_vm(banner="")
    monkeypatch.setattr(vm_mod, "ssh_banner", lambda port, *a, **k: "")
    vm.config.timeout = lambda name: 0.05
    with pytest.raises(LabTimeout, match=f"sshd of VM {vm.name}.*no SSH banner"):
        vm.up()


def test_vagrant_env_is_clean(make_vm, monkeypatch):
    monkeypatch.setenv("SOME_SECRET_TOKEN", "x")
    monkeypatch.setenv("VAGRANT_DEFAULT_PROVIDER", "virtualbox")
    vm, _, _ = make_vm()
    env = vm.vagrant_env(BOX, "kvm")
    assert "SOME_SECRET_TOKEN" not in env
    assert env["VAGRANT_DEFAULT_PROVIDER"] == "libvirt"
    assert env["VAGRANT_DOTFILE_PATH"] == str(vm.state_dir / "vagrant")
    assert env["VAGRANT_CHECKPOINT_DISABLE"] == "1"
    assert env["LAB_ACCEL"] == "kvm" and env["LAB_BOOT_KERNEL"].endswith("/0/libvirt/vmlinuz")
    assert "export LAB_VM_NAME=" in vm.shell_env()
    # The serial console goes to a file per VM (a panicked guest's last lines), by absolute
    # path: libvirt's QEMU does not run in the repo.
    assert env["LAB_SERIAL_LOG"] == str(vm.state_dir.resolve() / f"{vm.name}.serial.log")


def test_status_uses_libvirt_only(make_vm):
    vm, virsh, _ = make_vm()
    assert vm.status() == "not created"
    virsh.domains[vm.name] = ("running", "U1")
    assert vm.status().startswith("running, ssh 127.0.0.1:") and vm.status().endswith("answers")


def test_vagrant_failure_names_the_tail_and_the_fix(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vagrant"
    fake.write_text("#!/bin/sh\necho 'Bringing machine up'\n"
                    "printf 'Progress: 1%%\\rProgress: 2%%\\r'\n"
                    "echo 'Call to virDomainCreateWithFlags failed' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vh"))
    lines: list[str] = []
    vm = vm_mod.VagrantVM(Config(tmp_path), out=lines.append, run=FakeVirsh({}))
    with pytest.raises(vm_mod.VagrantError) as err:
        vm._vagrant("up")
    assert "virDomainCreateWithFlags failed" in str(err.value)
    assert "invoke lab.destroy" in str(err.value)
    assert "vagrant: Bringing machine up" in lines
    assert sum("Progress" in line for line in lines) == 1  # redraws collapsed


# ---- host prerequisites (lab/provision/hostsetup.py), also fakes only -------------------


def test_missing_packages_from_one_dpkg_query(monkeypatch):
    monkeypatch.setattr(hostsetup.shutil, "which", lambda name: "/usr/bin/" + name)
    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        out = "vagrant ii \ndebootstrap rc \n"  # rc: removed, config files left
        return subprocess.CompletedProcess(cmd, 1, out, "dpkg-query: no packages found")
    missing = hostsetup.missing_packages(["vagrant", "debootstrap", "qemu-utils"], run=run)
    assert missing == ["debootstrap", "qemu-utils"] and len(seen) == 1


def test_not_root_gets_the_exact_install_command():
    with pytest.raises(hostsetup.HostSetupError) as err:
        hostsetup.install_packages(["vagrant-libvirt", "debootstrap"], is_root=False)
    assert ("sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            "vagrant-libvirt debootstrap") in str(err.value)


def test_not_root_and_libvirtd_down_says_how_to_start_it(monkeypatch):
    monkeypatch.setattr(hostsetup, "running_processes", lambda: {"virtlogd"})
    with pytest.raises(hostsetup.HostSetupError, match="virtlockd, libvirtd not running.*"
                       "virtlogd -d; virtlockd -d; libvirtd -d"):
        hostsetup.ensure_libvirtd(hostsetup.HostReport(), is_root=False)


def test_everything_present_runs_nothing_but_checks(monkeypatch):
    monkeypatch.setattr(hostsetup, "running_processes", lambda: set(hostsetup.DAEMONS))
    monkeypatch.setattr(hostsetup, "libvirt_socket_answers", lambda: True)
    report = hostsetup.HostReport()
    hostsetup.ensure_libvirtd(report, run=_no_run)
    assert report.summary() == "all present"


def _no_run(*a, **k):
    raise AssertionError("nothing to run")


def test_restart_powers_a_lost_guest_off_and_starts_the_domain_without_vagrant(make_vm):
    """A panicked guest cannot shut down: destroy (power off) and start it again, then wait
    for its sshd; Vagrant's own start-up is not needed for a domain it defined."""
    vm, virsh, vagrant = make_vm()
    virsh.domains[vm.name] = ("running", "U1")
    before = time.time()
    assert not vm.restarted_after(before)
    spec = vm.restart("its kernel panicked")
    assert virsh.verbs()[-2:] == ["destroy", "start"] and vagrant == []
    assert spec.port == vm.ssh_spec().port
    # Another xdist worker that noticed the same loss (before the restart ended) skips its own.
    assert vm.restarted_after(before) and not vm.restarted_after(time.time() + 1)


def test_restart_that_libvirt_refuses_names_the_fix(make_vm):
    vm, virsh, vagrant = make_vm()

    def refuse_start(cmd, **kw):
        if cmd[3] == "start":
            return subprocess.CompletedProcess(cmd, 1, "", "error: domain not found")
        return FakeVirsh({})(cmd)
    vm.run = refuse_start
    with pytest.raises(vm_mod.VagrantError, match="could not start .*domain not found.*"
                       "fix: `invoke lab.destroy` then `invoke lab.up`"):
        vm.restart("silent")
