"""Labs (release x kernel x cgroup mode): names, state dirs, kernel command lines, refusals,
and VagrantVM keeping each lab's VM apart (fakes only, no VM)."""

from __future__ import annotations

import json

import pytest
from test_vm import BOX, Config, _vagrant_knows, make_vm  # noqa: F401  (fixture)

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.provision import labs
from lab.provision import vm as vm_mod
from lab.provision.labs import LabRefused, LabSpec


def test_default_lab_keeps_the_checkout_name_and_state(tmp_path):
    spec = LabSpec()
    assert spec.is_default and spec.id == "bookworm"
    assert labs.vm_name("nomad-lab-1234abcd", spec) == "nomad-lab-1234abcd"
    assert labs.state_dir(tmp_path / ".lab", spec) == tmp_path / ".lab"
    assert vm_mod.vm_name_for(tmp_path) == vm_mod.vm_name_for(tmp_path, spec)


@pytest.mark.parametrize(("text", "release", "cgroup", "kernel", "lab_id"), [
    ("bullseye", "bullseye", "v2", "", "bullseye"),
    ("bookworm-v1", "bookworm", "v1", "", "bookworm-v1"),
    ("trixie-v2", "trixie", "v2", "", "trixie"),
    ("bookworm+bpo", "bookworm", "v2", "bpo", "bookworm-k-bpo"),
    ("Bookworm-v1+6.12.12+bpo-amd64", "bookworm", "v1", "6.12.12+bpo-amd64",
     "bookworm-k-6.12.12-bpo-amd64-v1"),
])
def test_parse_and_id(text, release, cgroup, kernel, lab_id):
    spec = LabSpec.parse(text)
    assert (spec.release, spec.cgroup, spec.kernel, spec.id) == (release, cgroup, kernel, lab_id)
    assert not spec.is_default or lab_id == "bookworm"


def test_other_labs_get_their_own_name_and_state(tmp_path):
    names = {labs.vm_name("nomad-lab-x", LabSpec.parse(t))
             for t in ("bookworm", "bullseye", "bookworm-v1", "trixie")}
    assert names == {"nomad-lab-x", "nomad-lab-x-bullseye", "nomad-lab-x-bookworm-v1",
                     "nomad-lab-x-trixie"}
    assert labs.state_dir(tmp_path, LabSpec.parse("bookworm-v1")) == tmp_path / "labs" / \
        "bookworm-v1"


def test_cmdline_asks_for_pure_legacy_on_v1():
    v2, v1 = LabSpec().cmdline(), LabSpec(cgroup="v1").cmdline()
    assert "systemd.unified_cgroup_hierarchy=1" in v2 and "legacy" not in v2
    # unified_cgroup_hierarchy=0 alone gives systemd's hybrid mode, which crun refuses.
    assert "systemd.unified_cgroup_hierarchy=0" in v1
    assert "systemd.legacy_systemd_cgroup_controller=1" in v1
    assert v1.startswith("root=/dev/vda rw console=ttyS0")


@pytest.mark.parametrize(("text", "why"), [
    ("buster", "no crun package"),
    ("sid", "not reproducible"),
    ("hamm", "unknown to the lab"),
    ("trixie-v1", "systemd 257"),
    ("bookworm+6.12", "not understood"),
])
def test_labs_it_cannot_serve_are_refused_with_the_reason(text, why):
    spec = LabSpec.parse(text)
    with pytest.raises(LabRefused, match=why):
        spec.check()


def test_served_labs_pass_the_check():
    for text in ("bullseye", "bookworm", "trixie", "bookworm-v1", "bullseye-v1", "bookworm+bpo",
                 "trixie+linux-image-6.12.95+deb13-amd64=6.12.95-1"):
        assert LabSpec.parse(text).check().refusal() == ""


def test_settings_select_the_lab_through_the_config():
    spec = LabSpec.parse("bullseye-v1")
    config = LabConfig.load(env=spec.settings())
    assert LabSpec.from_config(config) == spec
    with pytest.raises(LabError, match="LAB_CGROUP=v1"):
        LabConfig.load(env={"LAB_CGROUP": "hybrid"})


def _vm_for(tmp_path, make_vm, monkeypatch, **lab):  # noqa: F811
    vm, virsh, vagrant = make_vm()
    config = Config(tmp_path)
    for key, value in lab.items():
        setattr(config, key, value)
    other = vm_mod.VagrantVM(config, out=lambda _: None, run=virsh)
    monkeypatch.setattr(other, "prepare", lambda: (BOX, vm_mod.accel_mod.Accel(
        "tcg", 4.0, "t", "t")))
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(other, "_vagrant", lambda *a, env=None: calls.append(a) or "")
    return vm, other, virsh, calls


def test_two_labs_of_one_checkout_are_two_vms(tmp_path, make_vm, monkeypatch):  # noqa: F811
    default, v1, virsh, calls = _vm_for(tmp_path, make_vm, monkeypatch, cgroup="v1")
    assert v1.name == default.name + "-bookworm-v1"
    assert v1.state_dir == default.state_dir / "labs" / "bookworm-v1"
    default._save_state(ssh_port=2222)
    v1.up()
    assert calls == [("up", "--provider", "libvirt")]
    assert v1.ssh_spec().port != 2222  # its own forward
    env = json.loads((v1.state_dir / "vagrant-env.json").read_text())
    assert env["LAB_VM_NAME"] == v1.name
    assert "systemd.legacy_systemd_cgroup_controller=1" in env["LAB_CMDLINE"]
    assert v1.vagrant_env()["VAGRANT_DOTFILE_PATH"] == str(v1.state_dir / "vagrant")
    # The serial logs and the accel decision stay in the checkout's .lab/.
    assert v1.serial_log.parent == default.state_dir.resolve()
    assert json.loads(default.state_file.read_text())["ssh_port"] == 2222


def test_a_vm_booted_with_another_cmdline_is_recreated(tmp_path, make_vm, monkeypatch):  # noqa: F811
    _, v1, virsh, calls = _vm_for(tmp_path, make_vm, monkeypatch, cgroup="v1")
    virsh.domains[v1.name] = ("running", "U1")
    _vagrant_knows(v1, "U1")
    v1._save_state(box=BOX.name, accel="tcg", cmdline=LabSpec().cmdline())
    monkeypatch.setattr(vm_mod, "ssh_banner", lambda *a, **k: "SSH-2.0-x")
    v1.up()
    assert calls == [("destroy", "--force"), ("up", "--provider", "libvirt")]
