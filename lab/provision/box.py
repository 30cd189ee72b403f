"""The lab's Vagrant box: built locally with debootstrap, cached by the hash of its inputs.

No Vagrant Cloud, no cloud images: `ensure_box()` builds a Debian box with
`provision/build-box.sh` (phases debootstrap, configure, image, package), adds it to Vagrant
as `nomad-lab/debian-<release>-<hash>` and keeps the `.box` file in the cache dir
(`$XDG_CACHE_HOME/nomad-lab/boxes`, outside the repo, so a fresh clone reuses it). When the box
with the current hash is already added, `ensure_box()` only reads one small file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.core.config import DEFAULT_TIMEOUTS, ROOT, LabConfig, default_cache_dir
from lab.core.errors import LabError
from lab.core.subrun import lines_until_deadline

BUILD_SCRIPT = ROOT / "provision" / "build-box.sh"
DEFAULT_RELEASE = LabConfig.box_release
BOX_USER = "lab"
DISK_GB = 8
BOX_PREFIX = "nomad-lab/debian-"

# The headless JRE each release ships (bookworm's 17 is the lab's reference).
JRE_BY_RELEASE = {
    "bullseye": "openjdk-11-jre-headless",
    "bookworm": "openjdk-17-jre-headless",
    "trixie": "openjdk-21-jre-headless",
}
BASE_PACKAGES = (
    "systemd-sysv", "openssh-server", "sudo", "linux-image-amd64", "initramfs-tools", "crun",
    "qemu-guest-agent", "iproute2", "kmod", "procps", "psmisc", "util-linux", "iptables",
    "curl", "jq", "unzip", "ca-certificates", "e2fsprogs",
    "dbus",  # minbase has none: hostnamectl/loginctl and non-root systemctl need it
    # Group networking (bridge mode): Nomad's CNI plugins (bridge, host-local, portmap,
    # firewall, loopback), installed in /usr/lib/cni; guest-setup.sh links those five into
    # /opt/lab/cni, the agents' cni_path.
    "containernetworking-plugins",
    "dnsmasq-base",  # a resolver inside the lab host, for the name-resolution tests
    "dmsetup",  # device-mapper suspend: a real hung task for the kernel-health gate's test
)
# Suites of Debian's main archive; an entry with only other suites (bookworm-security,
# a vendor's "nodistro") is not the Debian mirror.
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable"}
# debootstrap lines worth showing live; the full output goes to the build log.
PROGRESS = re.compile(r"^(I: (Retrieving Release|Checking component|Retrieving Packages$|"
                      r"Installing core|Unpacking the base|Configuring the base|"
                      r"Base system installed)|[EW]: )")

Out = Callable[[str], None]


class BoxError(LabError):
    """The box could not be built or added."""


@dataclass(frozen=True)
class Box:
    name: str          # as in `vagrant box list`
    release: str
    hash: str
    box_file: Path     # cached .box tar
    kernel: Path       # vmlinuz/initrd beside the box, for direct kernel boot and the KVM probe
    initrd: Path


def lab_cache_dir(config: object = None) -> Path:
    """`config.cache_dir` if the lab config has one, else $XDG_CACHE_HOME/nomad-lab."""
    configured = getattr(config, "cache_dir", None)
    return Path(configured) if configured else default_cache_dir()


def vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def box_packages(release: str) -> list[str]:
    try:
        jre = JRE_BY_RELEASE[release]
    except KeyError:
        raise BoxError(f"unknown Debian release '{release}': the box knows "
                       f"{', '.join(JRE_BY_RELEASE)} (add its JRE to JRE_BY_RELEASE)") from None
    return [*BASE_PACKAGES, jre]


# ---- mirror --------------------------------------------------------------------------------

def _deb822_entries(text: str) -> Iterable[dict[str, str]]:
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields:
            yield fields


def _one_line_entries(text: str) -> Iterable[dict[str, str]]:
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(line) >= 3:
            yield {"types": line[0], "uris": line[1], "suites": line[2],
                   "components": " ".join(line[3:])}


def _serves_main_archive(entry: dict[str, str]) -> bool:
    """A `deb` entry for a plain release suite of Debian's main archive (not -security, not
    -updates, not third-party repositories)."""
    if "deb" not in entry.get("types", "").split() or entry.get("enabled", "yes") == "no":
        return False
    if "main" not in entry.get("components", "").split():
        return False
    plain = [s for s in entry.get("suites", "").split() if s in DEBIAN_SUITES]
    return bool(plain) and all("security" not in u for u in entry.get("uris", "").split())


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive URL from the host's apt sources (LAB_DEBIAN_MIRROR overrides)."""
    override = os.environ.get("LAB_DEBIAN_MIRROR")
    if override:
        return override
    sources: list[tuple[Path, Iterable[dict[str, str]]]] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        sources.append((path, _deb822_entries(path.read_text())))
    for path in one_line:
        if path.is_file():
            sources.append((path, _one_line_entries(path.read_text())))
    for _path, entries in sources:
        for entry in entries:
            if _serves_main_archive(entry):
                for uri in entry["uris"].split():
                    if uri.startswith(("http://", "https://", "file:/")):
                        return uri
    raise BoxError(f"no Debian main archive found in {apt_dir}/sources.list or "
                   f"{apt_dir}/sources.list.d/*.sources: configure apt, or set LAB_DEBIAN_MIRROR "
                   "to a Debian archive URL")


# ---- key and hash --------------------------------------------------------------------------

def ensure_ssh_key(cache_dir: Path) -> Path:
    """The per-lab ed25519 key (private key path); never Vagrant's insecure key."""
    key = cache_dir / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        res = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nomad-lab",
                              "-f", str(key)], capture_output=True, text=True)
        if res.returncode != 0:
            raise BoxError(f"ssh-keygen failed: {res.stderr.strip()}; fix: install "
                           f"openssh-client, or remove the partial key in {key.parent}")
    return key


def box_hash(script: bytes, packages: list[str], release: str, pubkey: str, user: str,
             disk_gb: int) -> str:
    """Key of the box cache: everything that changes what is inside the box."""
    h = hashlib.sha256()
    for part in (script, "\n".join(packages).encode(), release.encode(), pubkey.strip().encode(),
                 user.encode(), str(disk_gb).encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def box_name(release: str, digest: str) -> str:
    return f"{BOX_PREFIX}{release}-{digest}"


def installed_box_dir(name: str, home: Path | None = None) -> Path:
    """Where `vagrant box add` unpacks an unversioned libvirt box."""
    escaped = name.replace("/", "-VAGRANTSLASH-")
    return (home or vagrant_home()) / "boxes" / escaped / "0" / "libvirt"


def is_box_added(name: str, digest: str, home: Path | None = None) -> bool:
    """Read the box's own record instead of `vagrant box list` (which takes seconds)."""
    record = installed_box_dir(name, home) / "lab-box.json"
    try:
        return json.loads(record.read_text()).get("box_hash") == digest
    except (OSError, ValueError):
        return False


# ---- build ---------------------------------------------------------------------------------

def _run_phase(phase: str, env: dict[str, str], log: Path, out: Out,
               deadline: float = DEFAULT_TIMEOUTS["box_phase"],
               script: Path = BUILD_SCRIPT) -> float:
    """Run one build phase, log everything, show progress lines; raise with the log tail."""
    start = time.monotonic()
    cmd = ["sh", str(script), phase]
    if os.geteuid() != 0:  # debootstrap, chroot and mkfs of a rootfs need root
        cmd = ["sudo", "-n", "env", *[f"{k}={v}" for k, v in env.items() if k.startswith("BOX_")],
               *cmd]
    out(f"box: {phase} ...")
    with log.open("a") as logf:
        logf.write(f"\n==== {phase} ====\n")
        logf.flush()
        # Its own process group: a timeout or an interrupt stops debootstrap with it.
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, process_group=0)
        assert proc.stdout is not None
        for line in lines_until_deadline(
                proc, deadline, f"box build phase '{phase}'",
                hint=f"it went silent or hung: read {log}; is the Debian mirror reachable?"):
            logf.write(line)
            if phase != "debootstrap" or PROGRESS.match(line):
                out(f"box:   {line.rstrip()}")
        rc = proc.wait()
    took = time.monotonic() - start
    if rc != 0:
        tail = "\n".join("    " + x for x in log.read_text(errors="replace").splitlines()[-25:])
        raise BoxError(f"box build phase '{phase}' failed (exit {rc}) after {took:.0f}s; "
                       f"last lines of {log}:\n{tail}\nfix the cause above and rerun "
                       "`invoke lab.box` (every phase restarts cleanly)")
    out(f"box: {phase} done in {took:.1f}s")
    return took


def _vagrant_box_add(name: str, box_file: Path, out: Out) -> float:
    start = time.monotonic()
    out(f"box: vagrant box add {name} ...")
    # cwd outside the repo: the lab's Vagrantfile needs settings that `box add` doesn't.
    res = subprocess.run(["vagrant", "box", "add", "--force", "--name", name, str(box_file)],
                         capture_output=True, text=True, cwd=box_file.parent,
                         env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip()[-2000:]
        raise BoxError(f"`vagrant box add {name}` failed:\n{tail}\nfix: check that vagrant and "
                       f"vagrant-libvirt are installed (`invoke lab.up` installs them); the box "
                       f"file is {box_file}")
    took = time.monotonic() - start
    out(f"box: box add done in {took:.1f}s")
    return took


def ensure_box(config: object = None, release: str | None = None, *, force: bool = False,
               out: Out = print) -> Box:
    """Return the lab's box, building and adding it only when its inputs changed."""
    release = release or getattr(config, "box_release", None) or DEFAULT_RELEASE
    cache = lab_cache_dir(config)
    key = ensure_ssh_key(cache)
    packages = box_packages(release)
    script = BUILD_SCRIPT.read_bytes()
    digest = box_hash(script, packages, release, key.with_suffix(".pub").read_text(), BOX_USER,
                      DISK_GB)
    name = box_name(release, digest)
    workdir = cache / "boxes" / f"{release}-{digest}"
    box = Box(name, release, digest, workdir / f"{release}.box",
              workdir / "box" / "vmlinuz", workdir / "box" / "initrd.img")

    if not force and is_box_added(name, digest):
        return _with_kernel(box)

    # One build at a time per cache (two `lab.up`s, two checkouts): wait for the other, then
    # find its result.
    (cache / "boxes").mkdir(parents=True, exist_ok=True)
    with (cache / "boxes" / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out(f"box: another process is building a box in {cache / 'boxes'}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_box_added(name, digest):
            return _with_kernel(box)
        workdir.mkdir(parents=True, exist_ok=True)
        if force or not box.box_file.exists():
            _build(box, workdir, key, packages, out,
                   float(getattr(config, "timeouts", DEFAULT_TIMEOUTS)["box_phase"]))
        _vagrant_box_add(name, box.box_file, out)
    return box


def _with_kernel(box: Box) -> Box:
    """The kernel/initrd from the cache dir, or from Vagrant's copy if the cache was wiped."""
    if box.kernel.exists():
        return box
    installed = installed_box_dir(box.name)
    return Box(box.name, box.release, box.hash, box.box_file, installed / "vmlinuz",
               installed / "initrd.img")


def _build(box: Box, workdir: Path, key: Path, packages: list[str], out: Out,
           phase_deadline: float = DEFAULT_TIMEOUTS["box_phase"]) -> None:
    log = workdir / "build.log"
    log.write_text("")
    env = {**os.environ,
           "BOX_RELEASE": box.release, "BOX_MIRROR": debian_mirror(),
           "BOX_PACKAGES": ",".join(packages), "BOX_PUBKEY": str(key.with_suffix(".pub")),
           "BOX_USER": BOX_USER, "BOX_WORKDIR": str(workdir), "BOX_DISK_GB": str(DISK_GB),
           "BOX_HASH": box.hash, "BOX_OUT": str(box.box_file)}
    out(f"box: building {box.name} from {env['BOX_MIRROR']} (log: {log})")
    total = 0.0
    for phase in ("debootstrap", "configure", "image", "package"):
        total += _run_phase(phase, env, log, out, phase_deadline)
    # The rootfs is only an intermediate: the .box (and kernel/initrd beside it) is the cache.
    shutil.rmtree(workdir / "rootfs", ignore_errors=True)
    (workdir / "box" / "box.img").unlink(missing_ok=True)
    size = box.box_file.stat().st_size / 2**20
    out(f"box: built {box.box_file} ({size:.0f} MiB) in {total:.0f}s")


# ---- pruning -------------------------------------------------------------------------------

def prune_old_boxes(keep: Box, cache: Path, out: Out = print,
                    run: Callable[..., subprocess.CompletedProcess] | None = None) -> list[str]:
    """Remove what older builds of the same release left: Vagrant boxes, cached .box files, and
    box volumes in libvirt's pool that no VM disk is backed by. Call it after `up` succeeded, so
    the running VM's backing volume counts as used. Other releases are left alone, and so is a
    box whose volume backs some VM's disk (another checkout's or another lab's VM: its next
    `up` must not rebuild it)."""
    run = run or (lambda cmd, **kw: subprocess.run(cmd, capture_output=True, text=True, **kw))
    removed: list[str] = []
    prefix = f"{BOX_PREFIX}{keep.release}-"
    escaped_prefix = prefix.replace("/", "-VAGRANTSLASH-")
    boxes_dir = vagrant_home() / "boxes"
    backing = _backing_paths(run)
    in_use = {d for d in (boxes_dir.glob(f"{escaped_prefix}*") if boxes_dir.is_dir() else [])
              if any(f"/{d.name}_vagrant_box_image_" in path for path in backing)}
    for d in sorted(boxes_dir.glob(f"{escaped_prefix}*")) if boxes_dir.is_dir() else []:
        name = d.name.replace("-VAGRANTSLASH-", "/")
        if name != keep.name and d not in in_use:
            run(["vagrant", "box", "remove", "--force", "--all", name], cwd=cache,
                env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
            removed.append(f"box {name}")
    kept_hashes = {d.name.rsplit("-", 1)[-1] for d in in_use}
    for d in sorted((cache / "boxes").glob(f"{keep.release}-*")):
        if (d.is_dir() and d.name != f"{keep.release}-{keep.hash}"
                and d.name.rsplit("-", 1)[-1] not in kept_hashes):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"cache {d}")
    removed += _prune_pool_volumes(escaped_prefix, keep, run)
    if removed:
        out(f"box: pruned {len(removed)} leftover(s) of older {keep.release} boxes")
    return removed


def _backing_paths(run) -> set[str]:
    """Backing files of every volume in the pool (a VM disk is backed by its box's volume)."""
    listing = run(["virsh", "-c", "qemu:///system", "vol-list", "default"])
    if listing.returncode != 0:
        return set()
    found: set[str] = set()
    for line in listing.stdout.splitlines()[2:]:
        if line.split() and "_vagrant_box_image_" not in line.split()[0]:
            xml = run(["virsh", "-c", "qemu:///system", "vol-dumpxml", "--pool", "default",
                       line.split()[0]]).stdout
            found.update(re.findall(r"<backingStore>\s*<path>([^<]+)</path>", xml))
    return found


def _prune_pool_volumes(escaped_prefix: str, keep: Box, run) -> list[str]:
    virsh = ["virsh", "-c", "qemu:///system"]
    listing = run([*virsh, "vol-list", "default"])
    if listing.returncode != 0:
        return []
    volumes = [line.split()[0] for line in listing.stdout.splitlines()[2:] if line.split()]
    box_volumes = [v for v in volumes if v.startswith(escaped_prefix)
                   and "_vagrant_box_image_" in v]
    in_use = set()
    for vol in volumes:
        if vol in box_volumes:
            continue
        xml = run([*virsh, "vol-dumpxml", "--pool", "default", vol]).stdout
        in_use.update(re.findall(r"<backingStore>\s*<path>([^<]+)</path>", xml))
    removed = []
    keep_escaped = keep.name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    for vol in box_volumes:
        if any(path.endswith("/" + vol) for path in in_use):
            continue
        if vol.startswith(keep_escaped):
            continue  # the current box's upload: the next `up` would only redo it
        if run([*virsh, "vol-delete", "--pool", "default", vol]).returncode == 0:
            removed.append(f"volume {vol}")
    return removed
