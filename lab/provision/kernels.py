"""Any Debian kernel apart from the userland: LAB_KERNEL names a kernel package of the mirror.

`LAB_KERNEL=bpo` is the release's backports kernel (`linux-image-amd64` of
`<release>-backports`); `LAB_KERNEL=linux-image-6.12.95+deb12-amd64` (or `=<version>` after
it) any image package of `<release>` or `<release>-backports`. The package is downloaded on
the control host with apt (a private apt state in the cache, from the mirror of the host's apt
sources), pushed into the guest over SSH and installed there with dpkg: its modules land in
the guest, and its postinst makes the initrd in the guest (mkinitramfs: Debian builds virtio
and ext4 as modules). The vmlinuz and that initrd are copied back into the cache, per box
(userland) x kernel, and the VM boots them by direct kernel boot; the box itself is unchanged.
A local build handed over as files (`LAB_KERNEL=/path/to/vmlinuz[,modules]`) takes the same
road through lab/provision/localkernel.py.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.core.errors import LabError
from lab.provision import localkernel

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ALIASES = {"bpo": ("linux-image-amd64", "{release}-backports")}
PACKAGE = re.compile(r"linux-image-[a-z0-9.+~-]+(=[A-Za-z0-9.+~:-]+)?")

Runner = Callable[..., subprocess.CompletedProcess]


class KernelError(LabError):
    """The kernel asked for cannot be found, fetched or installed."""


@dataclass(frozen=True)
class KernelPackage:
    name: str        # linux-image-6.12.95+deb12-amd64
    version: str     # 6.12.95-1~bpo12+1
    deb: Path        # downloaded .deb on the control host

    @property
    def release_string(self) -> str:
        """`uname -r` of the kernel in the package."""
        return self.name.removeprefix("linux-image-")


def refusal(kernel: str) -> str:
    """Why LAB_KERNEL=`kernel` is not understood, or ''."""
    if localkernel.is_local(kernel):
        try:
            localkernel.parse(kernel)
        except LabError as exc:
            return str(exc)
        return ""
    if kernel in ALIASES or PACKAGE.fullmatch(kernel):
        return ""
    return (f"kernel {kernel!r} is not understood: use bpo (the release's backports kernel) or "
            "a Debian image package, e.g. linux-image-6.12.95+deb12-amd64[=<version>], or a "
            "local build: /path/to/vmlinuz[,/path/to/lib/modules/<release> or .deb]")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Apt:
    """apt-get/apt-cache over a private state dir: the host's own apt state is not touched."""

    def __init__(self, root: Path, mirror: str, release: str, run: Runner = _run):
        self.root, self.run = root, run
        self.suites = [release, f"{release}-backports"]
        self.sources = root / "sources.list"
        self.opts = ["-o", f"Dir::Etc::SourceList={self.sources}",
                     "-o", "Dir::Etc::SourceParts=/nonexistent",
                     "-o", f"Dir::State::Lists={root / 'lists'}",
                     "-o", f"Dir::Cache={root / 'cache'}",
                     "-o", "Dir::State::status=/dev/null", "-q"]
        self.mirror = mirror

    def _call(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        res = self.run([tool, *self.opts, *args], cwd=cwd)
        if res.returncode != 0:
            raise KernelError(f"`{tool} {' '.join(args)}` failed (exit {res.returncode}): "
                              f"{(res.stderr or res.stdout).strip()[-600:]}; fix: check the "
                              f"mirror {self.mirror} serves {', '.join(self.suites)}")
        return res.stdout

    def update(self) -> None:
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.sources.write_text("".join(f"deb [signed-by={KEYRING}] {self.mirror} {s} main\n"
                                        for s in self.suites))
        self._call("apt-get", "update")

    def show(self, package: str, version: str | None, suite: str | None) -> dict[str, str]:
        """The fields of the candidate (or the given version) of a package."""
        spec = f"{package}={version}" if version else package
        args = ["-t", suite] if suite else []
        text = self._call("apt-cache", *args, "show", spec)
        stanzas = [s for s in text.split("\n\n") if s.strip()]
        if not stanzas:
            raise KernelError(f"no package {spec} on {self.mirror} ({', '.join(self.suites)})")
        fields = [dict(re.findall(r"^([A-Za-z-]+): (.*)$", s, re.M)) for s in stanzas]
        if suite or version:
            return fields[0]
        return max(fields, key=lambda f: _version_key(f.get("Version", "")))

    def download(self, package: str, version: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        cached = sorted(into.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
        if cached:
            return cached[-1]
        self._call("apt-get", "download", f"{package}={version}", cwd=into)
        found = sorted(into.glob(f"{package}_*.deb"))
        if not found:
            raise KernelError(f"apt-get download {package}={version} wrote no .deb in {into}")
        return found[-1]


def _version_key(version: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.+~:-]", version)]


def resolve(kernel: str, release: str, cache: Path, mirror: str,
            run: Runner = _run) -> KernelPackage:
    """The image package LAB_KERNEL names, downloaded into the cache (once)."""
    why = refusal(kernel)
    if why:
        raise KernelError(why)
    apt = Apt(cache / "apt" / release, mirror, release, run)
    apt.update()
    if kernel in ALIASES:
        meta, suite = ALIASES[kernel]
        fields = apt.show(meta, None, suite.format(release=release))
        deps = re.findall(r"(linux-image-[^\s,(|]+)", fields.get("Depends", ""))
        if not deps:
            raise KernelError(f"{meta} of {suite.format(release=release)} names no image "
                              f"package in its Depends: {fields.get('Depends')!r}")
        name, version = deps[0], None
    else:
        name, _, version = kernel.partition("=")
        version = version or None
    fields = apt.show(name, version, None)
    version = fields["Version"]
    deb = apt.download(name, version, cache / "kernels" / "debs")
    return KernelPackage(name, version, deb)


def cache_dir(cache: Path, box_hash: str, package: KernelPackage) -> Path:
    """vmlinuz + initrd of one kernel made in one userland (box)."""
    digest = hashlib.sha256(f"{package.name}={package.version}".encode()).hexdigest()[:8]
    return cache / "kernels" / f"{box_hash}-{package.release_string}-{digest}"


INSTALL = r"""
set -eu
deb=$1 kver=$2
# MODULES=dep: only what this VM needs (virtio, ext4, ...). The default, most, runs modprobe
# for every storage and network driver: 12+ min under TCG, against about a minute.
mkdir -p /etc/initramfs-tools/conf.d
echo MODULES=dep > /etc/initramfs-tools/conf.d/lab-kernel
if [ ! -e "/lib/modules/$kver/modules.dep" ] || [ ! -e "/boot/initrd.img-$kver" ]; then
  DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/tmp/lab-kernel-install.log 2>&1 ||
    { tail -n 20 /tmp/lab-kernel-install.log; exit 3; }
fi
[ -e "/boot/initrd.img-$kver" ] || update-initramfs -c -k "$kver" >/dev/null
rm -f "$deb"
chmod 0644 "/boot/vmlinuz-$kver" "/boot/initrd.img-$kver"
echo "installed $kver"
"""


def install_in_guest(host, package: KernelPackage, into: Path, out=print) -> tuple[Path, Path]:
    """dpkg -i the package in the guest (modules + initrd made there); copy back its vmlinuz and
    initrd into `into`. Returns (vmlinuz, initrd) on the control host."""
    kver = package.release_string
    remote = f"/tmp/{package.deb.name}"
    out(f"kernel: pushing {package.deb.name} ({package.deb.stat().st_size / 2**20:.0f} MiB)")
    host.put(package.deb, remote)
    out(f"kernel: installing {package.name} {package.version} in the guest (dpkg -i, "
        "mkinitramfs)")
    res = host.sudo(f"bash -c {shlex.quote(INSTALL)} install {remote} {kver}", check=False,
                    timeout=1800)
    if res.rc != 0:
        raise KernelError(f"installing {package.name} in the guest failed (exit {res.rc}):\n"
                          f"{(res.stdout + res.stderr).strip()[-1500:]}")
    into.mkdir(parents=True, exist_ok=True)
    vmlinuz, initrd = into / "vmlinuz", into / "initrd.img"
    host.get(f"/boot/vmlinuz-{kver}", vmlinuz)
    host.get(f"/boot/initrd.img-{kver}", initrd)
    (into / "kernel.txt").write_text(f"{package.name}={package.version}\n")
    return vmlinuz, initrd


def install(kernel: str, release: str, cache: Path, mirror: str, box_hash: str, host,
            out=print) -> tuple[Path, Path, str]:
    """Install LAB_KERNEL's kernel in the guest; (vmlinuz, initrd, release string) to boot,
    cached per box (userland) x kernel."""
    if localkernel.is_local(kernel):
        local = localkernel.parse(kernel)
        digest = hashlib.sha256(local.vmlinuz.read_bytes()).hexdigest()[:8]
        into = cache / "kernels" / f"{box_hash}-{local.release_string}-local-{digest}"
        vmlinuz, initrd = localkernel.install_in_guest(host, local, into, out)
        return vmlinuz, initrd, local.release_string
    package = resolve(kernel, release, cache, mirror)
    vmlinuz, initrd = install_in_guest(host, package, cache_dir(cache, box_hash, package), out)
    return vmlinuz, initrd, package.release_string
