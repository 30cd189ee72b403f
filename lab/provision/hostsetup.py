"""Control-host set-up: the Debian packages the lab needs, and libvirtd running.

These machines have no systemd, so libvirtd and its helpers are started by hand, and a host
without `libvirt-daemon-system` lacks the user, directories and storage pool that package
would create. `ensure_host()` does all of it, and costs a few milliseconds when everything is
already in place: it is called at the start of every `lab.up`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lab.core import wait
from lab.core.errors import LabError

# Debian package -> why the lab needs it.
REQUIRED_PACKAGES: dict[str, str] = {
    "vagrant": "VM lifecycle",
    "vagrant-libvirt": "Vagrant's libvirt provider",
    "libvirt-daemon": "libvirtd",
    "libvirt-daemon-driver-qemu": "libvirt's QEMU driver",
    "libvirt-clients": "virsh (stale domain clean-up, storage pool)",
    "qemu-system-x86": "the VM itself, and the KVM probe",
    "qemu-utils": "qemu-img (box image)",
    "debootstrap": "box build",
    "e2fsprogs": "mkfs.ext4 -d (box image)",
    "openssh-client": "ssh-keygen (per-lab key)",
    # Without it the unit tests that check the lab's bash scripts could only skip.
    "shellcheck": "the unit tests' check of the bash run on the lab host (lab/remote/scripts, "
                  "lab/faults/scripts)",
}

LIBVIRT_SOCKET = Path("/var/run/libvirt/libvirt-sock")
LIBVIRT_URI = "qemu:///system"
# Started in this order: libvirtd talks to the other two.
DAEMONS = ("virtlogd", "virtlockd", "libvirtd")
STORAGE_POOL = "default"  # vagrant-libvirt's default storage_pool_name
STORAGE_DIR = Path("/var/lib/libvirt/images")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_CONF_TEXT = """\
# Written by nomad-lab (lab/provision/hostsetup.py) because no libvirt-daemon-system package
# provides one on this host: QEMU runs as root, like the rest of the lab tooling,
# so it can read the box's kernel and initrd wherever Vagrant keeps them.
user = "root"
group = "root"
"""

Runner = Callable[..., subprocess.CompletedProcess]


class HostSetupError(LabError):
    """The control host lacks something and the lab cannot fix it by itself."""


@dataclass
class HostReport:
    installed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def summary(self) -> str:
        done = [f"installed {' '.join(self.installed)}" if self.installed else "",
                f"started {' '.join(self.started)}" if self.started else "",
                f"created {', '.join(self.created)}" if self.created else ""]
        return "; ".join(d for d in done if d) or "all present"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def missing_packages(packages: Iterable[str] = REQUIRED_PACKAGES, run: Runner = _run) -> list[str]:
    """Packages from `packages` that dpkg does not report as installed (one dpkg-query call)."""
    packages = list(packages)
    if not shutil.which("dpkg-query"):
        raise HostSetupError("dpkg-query not found: the lab's host set-up supports Debian/Ubuntu "
                             f"only; install by hand: {' '.join(packages)}")
    res = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *packages])
    installed = {line.split()[0] for line in res.stdout.splitlines()
                 if len(line.split()) > 1 and line.split()[1].startswith("ii")}
    return [p for p in packages if p not in installed]


def install_command(packages: Iterable[str]) -> str:
    return ("sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            + " ".join(packages))


def install_packages(packages: list[str], run: Runner = _run, is_root: bool | None = None,
                     out: Callable[[str], None] = print) -> None:
    if not packages:
        return
    if not (os.geteuid() == 0 if is_root is None else is_root):
        raise HostSetupError(f"missing Debian packages: {' '.join(packages)}; "
                             f"install them with: {install_command(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
        out(f"host: {' '.join(cmd[:3])} ...")
        res = run(cmd, env=env)
        if res.returncode != 0:
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
            raise HostSetupError(f"`{' '.join(cmd)}` exited {res.returncode}:\n{tail}\n"
                                 f"fix the apt problem above, then rerun (or run: "
                                 f"{install_command(packages)})")


def running_processes(proc: Path = Path("/proc")) -> set[str]:
    """Command names of all processes (reading /proc is faster than spawning pgrep)."""
    names = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                names.add((entry / "comm").read_text().strip())
            except OSError:
                continue  # the process exited while we looked
    return names


def libvirt_socket_answers(path: Path = LIBVIRT_SOCKET) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(path))
        return True
    except OSError:
        return False


def _ensure_libvirt_files(report: HostReport, run: Runner) -> None:
    """What libvirt-daemon-system would have created: dirs, the qemu user, qemu.conf."""
    for d in (Path("/var/log/libvirt"), Path("/var/run/libvirt"), STORAGE_DIR):
        if not d.is_dir():
            d.mkdir(parents=True)
            report.created.append(str(d))
    # libvirt resolves its compiled-in user before reading qemu.conf: it must exist.
    if run(["getent", "passwd", "libvirt-qemu"]).returncode != 0:
        res = run(["useradd", "--system", "--user-group", "--no-create-home",
                   "--home-dir", "/var/lib/libvirt", "--shell", "/usr/sbin/nologin",
                   "libvirt-qemu"])
        if res.returncode != 0:
            raise HostSetupError(f"cannot create the libvirt-qemu user: {res.stderr.strip()}; "
                                 "fix: install libvirt-daemon-system")
        report.created.append("user libvirt-qemu")
    if not QEMU_CONF.exists():
        QEMU_CONF.write_text(QEMU_CONF_TEXT)
        report.created.append(str(QEMU_CONF))


def ensure_libvirtd(report: HostReport, run: Runner = _run, is_root: bool | None = None,
                    timeout: float = 30) -> None:
    running = running_processes()
    missing = [d for d in DAEMONS if d not in running]
    if not missing and libvirt_socket_answers():
        return
    if not (os.geteuid() == 0 if is_root is None else is_root):
        raise HostSetupError(f"{', '.join(missing) or 'libvirtd'} not running; start them with: "
                             "sudo sh -c 'virtlogd -d; virtlockd -d; libvirtd -d'")
    _ensure_libvirt_files(report, run)
    for daemon in DAEMONS:
        if daemon in missing:
            res = run([daemon, "-d"])
            if res.returncode != 0:
                raise HostSetupError(f"`{daemon} -d` exited {res.returncode}: "
                                     f"{res.stderr.strip()}; see /var/log/libvirt/{daemon}.log")
            report.started.append(daemon)

    def up() -> bool | wait.Pending:
        if "libvirtd" not in running_processes():
            raise HostSetupError("libvirtd exited right after start; its log says:\n"
                                 + _log_tail(Path("/var/log/libvirt/libvirtd.log")))
        return libvirt_socket_answers() or wait.Pending(f"{LIBVIRT_SOCKET} not accepting")
    wait.until(up, timeout, "libvirtd socket", hint="see /var/log/libvirt/libvirtd.log")


def ensure_storage_pool(report: HostReport, run: Runner = _run) -> None:
    """vagrant-libvirt puts box and VM volumes in the pool named 'default'."""
    info = run(["virsh", "-c", LIBVIRT_URI, "pool-info", STORAGE_POOL])
    if info.returncode == 0 and "running" in info.stdout:
        return
    steps = [] if info.returncode == 0 else [
        ["pool-define-as", STORAGE_POOL, "dir", "--target", str(STORAGE_DIR)]]
    steps += [["pool-build", STORAGE_POOL], ["pool-start", STORAGE_POOL],
              ["pool-autostart", STORAGE_POOL]]
    for step in steps:
        res = run(["virsh", "-c", LIBVIRT_URI, *step])
        if res.returncode != 0 and "already active" not in res.stderr:
            raise HostSetupError(f"`virsh {' '.join(step)}` failed: {res.stderr.strip()}")
    report.created.append(f"storage pool '{STORAGE_POOL}' ({STORAGE_DIR})")


def _log_tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def ensure_host(run: Runner = _run, out: Callable[[str], None] = print) -> HostReport:
    """Install what is missing and start libvirtd; raise HostSetupError with the fix if we can't."""
    report = HostReport()
    start = time.monotonic()
    missing = missing_packages(run=run)
    install_packages(missing, run=run, out=out)
    report.installed = missing
    ensure_libvirtd(report, run=run)
    ensure_storage_pool(report, run=run)
    out(f"host: {report.summary()} ({time.monotonic() - start:.1f}s)")
    return report
