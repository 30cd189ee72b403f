"""KVM or TCG: does KVM really boot the box's kernel here?

`/dev/kvm` existing proves little: on the CI machine it is a paravirtual KVM on which QEMU with
`-enable-kvm` hangs right after the boot stub's "Probing EDD" line. So we boot the box's own
kernel and initrd under KVM for a few seconds and watch the serial console: the kernel running
its init proves KVM works; silence after "Probing EDD" (or an error) means TCG. The answer is
cached per (kernel, QEMU version, host kernel) and announced; LAB_ACCEL=kvm|tcg overrides it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.core.config import TCG_TIMEOUT_SCALE
from lab.core.errors import LabError

QEMU = "qemu-system-x86_64"
# Timeouts in the lab are multiplied by this: TCG boots and runs Java several times slower.
TIMEOUT_SCALE = {"kvm": 1.0, "tcg": TCG_TIMEOUT_SCALE}
# Console lines that mean the kernel got well past the boot stub (any one is enough).
BOOTED_MARKERS = ("Run /init as init process", "Freeing unused kernel image",
                  "Loading, please wait")
PROBE_SECONDS = 20.0  # a KVM boot reaches /init in 1-3 s; the margin is for a loaded host


class AccelError(LabError):
    """An acceleration override is invalid."""


@dataclass(frozen=True)
class Accel:
    name: str            # "kvm" or "tcg"
    timeout_scale: float
    reason: str          # why, for humans
    source: str          # "probe", "cache <path>" or "LAB_ACCEL"

    def announce(self) -> str:
        return f"accel: {self.name} ({self.reason}; {self.source})"


def _choice(name: str, reason: str, source: str) -> Accel:
    return Accel(name, TIMEOUT_SCALE[name], reason, source)


def qemu_version(qemu: str = QEMU) -> str:
    try:
        res = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AccelError(f"cannot run {qemu}: {exc}; fix: install qemu-system-x86") from None
    return res.stdout.splitlines()[0] if res.stdout else "unknown"


def cache_key(kernel: Path, qemu_ver: str, host_kernel: str) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(kernel.read_bytes()).digest())
    h.update(qemu_ver.encode())
    h.update(host_kernel.encode())
    return h.hexdigest()[:16]


def judge_console(console: str, exited: bool, rc: int | None) -> tuple[bool, str]:
    """(KVM works?, why) from what the probe VM printed on its serial console."""
    for marker in BOOTED_MARKERS:
        if marker in console:
            return True, f"KVM booted the box's kernel to '{marker}'"
    lines = [ln.strip() for ln in console.splitlines() if ln.strip()]
    last = lines[-1][:160] if lines else "nothing on the serial console"
    if exited:
        return False, f"KVM present but QEMU exited {rc} while booting the box: '{last}'"
    if "Probing EDD" in console and not any("Linux version" in ln for ln in lines):
        return False, "KVM present but cannot boot the box: hung after 'Probing EDD'"
    return False, f"KVM present but the box's kernel made no progress: last line '{last}'"


def probe_kvm(kernel: Path, initrd: Path, seconds: float = PROBE_SECONDS,
              qemu: str = QEMU) -> tuple[bool, str]:
    """Boot kernel+initrd with -enable-kvm until a BOOTED_MARKERS line or the deadline."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    with tempfile.TemporaryDirectory(prefix="lab-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        cmd = [qemu, "-enable-kvm", "-cpu", "host", "-m", "512", "-smp", "1",
               "-nodefaults", "-display", "none", "-no-reboot",
               "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initrd),
               "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 root=/dev/nonexistent"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + seconds
        text, exited = "", False
        try:
            # Not a readiness wait on lab state: a bounded watch of a throwaway VM's console.
            while time.monotonic() < deadline:
                text = console.read_text(errors="replace") if console.exists() else ""
                if any(m in text for m in BOOTED_MARKERS):
                    break
                if proc.poll() is not None:
                    exited = True
                    break
                time.sleep(0.2)
            text = console.read_text(errors="replace") if console.exists() else text
        finally:
            proc.kill()
            _, stderr = proc.communicate()
        ok, why = judge_console(text + (f"\n{stderr}" if exited and stderr else ""),
                                exited, proc.returncode)
        return ok, why


def detect_accel(kernel: Path, initrd: Path, cache_dir: Path, *,
                 env: dict[str, str] | None = None,
                 probe: Callable[[Path, Path], tuple[bool, str]] = probe_kvm,
                 out: Callable[[str], None] = print) -> Accel:
    """KVM if it really boots the box here, else TCG; cached, overridable, announced."""
    env = os.environ if env is None else env
    override = env.get("LAB_ACCEL", "").strip().lower()
    if override:
        if override not in TIMEOUT_SCALE:
            raise AccelError(f"LAB_ACCEL={override!r} is not valid: use 'kvm' or 'tcg' (or unset "
                             "it to detect)")
        accel = _choice(override, "forced", "LAB_ACCEL")
        out(accel.announce())
        return accel

    key = cache_key(kernel, qemu_version(), platform.release())
    cache_file = cache_dir / "accel" / f"{key}.json"
    try:
        data = json.loads(cache_file.read_text())
        accel = Accel(data["name"], TIMEOUT_SCALE[data["name"]], data["reason"],
                      f"cached in {cache_file}")
    except (OSError, ValueError, KeyError):
        out(f"accel: probing whether KVM boots {kernel.name} (up to {PROBE_SECONDS:.0f}s) ...")
        ok, why = probe(kernel, initrd)
        accel = _choice("kvm" if ok else "tcg", why, f"cached in {cache_file}")
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(asdict(accel) | {"kernel": str(kernel)}) + "\n")
    out(accel.announce())
    return accel
