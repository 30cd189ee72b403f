"""A local kernel build as files: LAB_KERNEL=/path/to/vmlinuz[,/path/to/modules]

As vmtest and virtme-ng take them: a bzImage (or vmlinuz) and its modules, either the
`lib/modules/<release>` directory or a `.deb` that holds it (`make bindeb-pkg`). Without a
modules path, `<vmlinuz dir>/../lib/modules/<release>` (an unpacked package or an
`INSTALL_MOD_PATH` tree) or `<vmlinuz dir>/lib/modules/<release>` is used. The release string
is read from the bzImage header. The modules are installed in the guest, the initrd made there
with mkinitramfs, and the vmlinuz booted by direct kernel boot (lab/provision/vm.py).
"""

from __future__ import annotations

import shlex
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.core.errors import LabError

INSTALL = r"""
set -eu
archive=$1 kver=$2 config=${3:-}
# MODULES=dep: only what this VM needs (virtio, ext4, ...). The default, most, runs modprobe
# for every storage and network driver: 12+ min under TCG, against about a minute.
mkdir -p /etc/initramfs-tools/conf.d
echo MODULES=dep > /etc/initramfs-tools/conf.d/lab-kernel
case "$archive" in
*.deb) DEBIAN_FRONTEND=noninteractive dpkg -i "$archive" >/tmp/lab-kernel-install.log 2>&1 ||
         { tail -n 20 /tmp/lab-kernel-install.log; exit 3; } ;;
*) rm -rf "/lib/modules/$kver" && tar -xf "$archive" -C /lib/modules ;;
esac
rm -f "$archive"
[ -d "/lib/modules/$kver" ] || { echo "no /lib/modules/$kver after installing $archive"; exit 4; }
depmod -a "$kver"
# mkinitramfs reads the kernel's config (which compression it can unpack)
if [ -n "$config" ]; then install -m 0644 "$config" "/boot/config-$kver" && rm -f "$config"; fi
mkinitramfs -o "/boot/initrd.img-$kver" "$kver"
chmod 0644 "/boot/initrd.img-$kver"
echo "installed $kver"
"""


class LocalKernelError(LabError):
    """The local kernel build cannot be used."""


@dataclass(frozen=True)
class LocalKernel:
    vmlinuz: Path
    modules: Path          # lib/modules/<release> dir, or a .deb
    release_string: str
    config: Path | None = None  # the kernel's .config (config-<release> beside it, or .config)

    def describe(self) -> str:
        return f"{self.vmlinuz} ({self.release_string}) with modules {self.modules}"


def is_local(kernel: str) -> bool:
    return kernel.startswith(("/", "./", "../", "~"))


def bzimage_release(vmlinuz: Path) -> str:
    """The release string (`uname -r`) in a bzImage's setup header (Linux boot protocol 2.x:
    'HdrS' at 0x202, kernel_version at 0x20e, relative to 0x200)."""
    head = vmlinuz.read_bytes()[:0x10000]
    if head[0x202:0x206] != b"HdrS":
        raise LocalKernelError(f"{vmlinuz} is not a bzImage (no 'HdrS' setup header): pass the "
                               "arch/x86/boot/bzImage or /boot/vmlinuz-* file")
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[offset:offset + 256].split(b"\0", 1)[0].decode(errors="replace")
    if not text.strip():
        raise LocalKernelError(f"{vmlinuz} carries no version string in its setup header")
    return text.split()[0]


def parse(kernel: str) -> LocalKernel:
    path_text, _, modules_text = kernel.partition(",")
    vmlinuz = Path(path_text).expanduser().resolve()
    if not vmlinuz.is_file():
        raise LocalKernelError(f"LAB_KERNEL names {vmlinuz}, which is not a file")
    release = bzimage_release(vmlinuz)
    if modules_text:
        modules = Path(modules_text).expanduser().resolve()
    else:
        candidates = [vmlinuz.parent.parent / "lib" / "modules" / release,
                      vmlinuz.parent / "lib" / "modules" / release]
        modules = next((c for c in candidates if c.is_dir()), candidates[0])
    if not (modules.is_dir() or (modules.is_file() and modules.suffix == ".deb")):
        raise LocalKernelError(f"no modules for {release} at {modules}: pass them as "
                               "LAB_KERNEL=<vmlinuz>,<lib/modules/<release> dir or .deb>")
    if modules.is_dir() and modules.name != release:
        raise LocalKernelError(f"modules dir {modules} is not named after the kernel's "
                               f"release {release}")
    configs = [vmlinuz.parent / f"config-{release}",
               *[d / ".config" for d in [vmlinuz.parent, *list(vmlinuz.parents)[:4]]]]
    return LocalKernel(vmlinuz, modules, release, next((c for c in configs if c.is_file()), None))


def install_in_guest(host, kernel: LocalKernel, into: Path, out=print) -> tuple[Path, Path]:
    """Modules into the guest's /lib/modules, initrd made there (mkinitramfs), vmlinuz and
    initrd into `into` on the control host."""
    with tempfile.TemporaryDirectory(prefix="lab-kernel-") as tmp:
        if kernel.modules.is_dir():
            archive = Path(tmp) / f"modules-{kernel.release_string}.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(kernel.modules, arcname=kernel.release_string)
        else:
            archive = kernel.modules
        out(f"kernel: pushing modules of {kernel.release_string} "
            f"({archive.stat().st_size / 2**20:.0f} MiB)")
        remote = f"/tmp/{archive.name}"
        host.put(archive, remote)
        remote_config = ""
        if kernel.config:
            remote_config = f"/tmp/config-{kernel.release_string}"
            host.put(kernel.config, remote_config)
    out("kernel: installing the modules and making the initrd in the guest (mkinitramfs)")
    res = host.sudo(f"bash -c {shlex.quote(INSTALL)} install {remote} "
                    f"{shlex.quote(kernel.release_string)} {remote_config}", check=False,
                    timeout=1800)
    if res.rc != 0:
        raise LocalKernelError(f"installing {kernel.describe()} in the guest failed "
                               f"(exit {res.rc}):\n{(res.stdout + res.stderr).strip()[-1500:]}")
    into.mkdir(parents=True, exist_ok=True)
    vmlinuz, initrd = into / "vmlinuz", into / "initrd.img"
    shutil.copyfile(kernel.vmlinuz, vmlinuz)
    host.get(f"/boot/initrd.img-{kernel.release_string}", initrd)
    (into / "kernel.txt").write_text(kernel.describe() + "\n")
    return vmlinuz, initrd
