"""A local kernel build as files (LAB_KERNEL=/path/to/vmlinuz[,modules]): the release string
from the bzImage header, finding the modules, installing them in the guest (fake host)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from lab.provision import kernels, labs, localkernel

RELEASE = "6.12.95+deb12-amd64"


def fake_bzimage(path: Path, version: str = RELEASE) -> Path:
    data = bytearray(0x2000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x1000 - 0x200).to_bytes(2, "little")
    text = f"{version} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC".encode()
    data[0x1000:0x1000 + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def unpacked_package(root: Path) -> Path:
    """The layout of `dpkg-deb -x linux-image-*.deb root`."""
    vmlinuz = fake_bzimage(root / "boot" / f"vmlinuz-{RELEASE}")
    (root / "boot" / f"config-{RELEASE}").write_text("CONFIG_RD_GZIP=y\n")
    mod = root / "lib" / "modules" / RELEASE / "kernel" / "net" / "sched"
    mod.mkdir(parents=True)
    (mod / "sch_netem.ko").write_bytes(b"ko")
    return vmlinuz


def test_release_string_comes_from_the_bzimage_header(tmp_path):
    assert localkernel.bzimage_release(fake_bzimage(tmp_path / "bzImage")) == RELEASE
    (tmp_path / "not").write_bytes(b"\0" * 0x1000)
    with pytest.raises(localkernel.LocalKernelError, match="not a bzImage"):
        localkernel.bzimage_release(tmp_path / "not")


def test_modules_are_found_beside_an_unpacked_package_or_given(tmp_path):
    vmlinuz = unpacked_package(tmp_path / "pkg")
    found = localkernel.parse(str(vmlinuz))
    assert found.modules == tmp_path / "pkg" / "lib" / "modules" / RELEASE
    assert found.release_string == RELEASE
    assert found.config == tmp_path / "pkg" / "boot" / f"config-{RELEASE}"
    deb = tmp_path / "linux-image.deb"
    deb.write_bytes(b"!<arch>")
    assert localkernel.parse(f"{vmlinuz},{deb}").modules == deb
    lonely = fake_bzimage(tmp_path / "alone" / "bzImage")
    assert "no modules for" in kernels.refusal(str(lonely))
    assert "not a file" in kernels.refusal("/nonexistent/bzImage")
    assert kernels.refusal(str(vmlinuz)) == ""


def test_a_local_lab_is_named_after_the_file():
    spec = labs.LabSpec("bookworm", "v2", f"/tmp/k/boot/vmlinuz-{RELEASE}")
    assert spec.id == "bookworm-k-local-vmlinuz-6.12.95-deb12-amd64"


class FakeHost:
    def __init__(self):
        self.commands: list[str] = []

    def put(self, local, remote, mode="0644"):
        if str(local).endswith(".tar"):
            with tarfile.open(local) as tar:
                self.members = tar.getnames()
        self.remote = remote

    def sudo(self, cmd, **kw):
        self.commands.append(cmd)
        return type("R", (), {"rc": 0, "stdout": f"installed {RELEASE}", "stderr": ""})()

    def get(self, remote, local):
        self.got = remote
        Path(local).write_text("initrd")


def test_install_pushes_the_modules_and_makes_the_initrd_in_the_guest(tmp_path):
    kernel = localkernel.parse(str(unpacked_package(tmp_path / "pkg")))
    host = FakeHost()
    vmlinuz, initrd = localkernel.install_in_guest(host, kernel, tmp_path / "cache",
                                                   out=lambda _: None)
    assert f"{RELEASE}/kernel/net/sched/sch_netem.ko" in host.members
    assert "mkinitramfs" in host.commands[0] and "depmod" in host.commands[0]
    assert host.commands[0].endswith(f"/tmp/config-{RELEASE}")  # mkinitramfs reads it
    assert host.got == f"/boot/initrd.img-{RELEASE}"
    assert vmlinuz.read_bytes() == kernel.vmlinuz.read_bytes() and initrd.exists()
