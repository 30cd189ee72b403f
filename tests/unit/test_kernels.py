"""LAB_KERNEL: resolving a Debian kernel package with a private apt state (fake apt), and
installing it in the guest (fake host)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.provision import kernels

META = """Package: linux-image-amd64
Version: 6.12.95-1~bpo12+1
Depends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)
"""
IMAGE = """Package: linux-image-6.12.95+deb12-amd64
Version: 6.12.95-1~bpo12+1
Depends: kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
"""


class FakeApt:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, cmd, cwd=None, **kw):
        self.calls.append(cmd)
        args = [a for a in cmd[1:] if not a.startswith(("-o", "Dir::", "-q"))]
        out = ""
        if "show" in args:
            out = META if args[-1] == "linux-image-amd64" else IMAGE
        if "download" in args:
            name, _, version = args[-1].partition("=")
            (Path(cwd) / f"{name}_{version}_amd64.deb").write_bytes(b"deb")
        return subprocess.CompletedProcess(cmd, 0, out, "")


def test_bpo_resolves_the_backports_metapackage_to_its_image_package(tmp_path):
    apt = FakeApt()
    package = kernels.resolve("bpo", "bookworm", tmp_path, "http://mirror/debian", run=apt)
    assert package.name == "linux-image-6.12.95+deb12-amd64"
    assert package.release_string == "6.12.95+deb12-amd64"
    assert package.version == "6.12.95-1~bpo12+1" and package.deb.exists()
    sources = (tmp_path / "apt" / "bookworm" / "sources.list").read_text()
    assert "http://mirror/debian bookworm main" in sources
    assert "http://mirror/debian bookworm-backports main" in sources
    # the host's own apt state is never used
    assert all("Dir::State::status=/dev/null" in c for c in apt.calls)
    shows = [c for c in apt.calls if "show" in c]
    assert shows[0][-3:] == ["bookworm-backports", "show", "linux-image-amd64"]


def test_an_unknown_kernel_spelling_is_refused():
    assert "not understood" in kernels.refusal("6.12")
    assert kernels.refusal("linux-image-6.1.0-50-amd64") == ""
    with pytest.raises(kernels.KernelError, match="not understood"):
        kernels.resolve("latest", "bookworm", Path("/nonexistent"), "http://m")


class FakeHost:
    def __init__(self, rc=0):
        self.rc, self.commands, self.got = rc, [], []

    def put(self, local, remote, mode="0644"):
        self.put_args = (local, remote)

    def sudo(self, cmd, **kw):
        self.commands.append(cmd)
        return type("R", (), {"rc": self.rc, "stdout": "installed" if not self.rc else "",
                              "stderr": "dpkg: error" if self.rc else ""})()

    def get(self, remote, local):
        self.got.append(remote)
        Path(local).write_text(remote)


def test_install_pushes_installs_and_copies_back_vmlinuz_and_initrd(tmp_path):
    deb = tmp_path / "linux-image-6.12.95+deb12-amd64_1_amd64.deb"
    deb.write_bytes(b"x")
    package = kernels.KernelPackage("linux-image-6.12.95+deb12-amd64", "1", deb)
    host = FakeHost()
    vmlinuz, initrd = kernels.install_in_guest(host, package, tmp_path / "k", out=lambda _: None)
    assert host.put_args == (deb, f"/tmp/{deb.name}")
    assert "dpkg -i" in host.commands[0] and "6.12.95+deb12-amd64" in host.commands[0]
    assert host.got == ["/boot/vmlinuz-6.12.95+deb12-amd64",
                        "/boot/initrd.img-6.12.95+deb12-amd64"]
    assert vmlinuz.read_text().startswith("/boot/vmlinuz") and initrd.exists()
    with pytest.raises(kernels.KernelError, match="dpkg: error"):
        kernels.install_in_guest(FakeHost(rc=3), package, tmp_path / "k", out=lambda _: None)
