"""The lab VM's lifecycle through Vagrant (libvirt provider), ending in an SSHSpec.

One VM per checkout and lab (lab/provision/labs.py: release x kernel x cgroup mode): the
default lab's name is `nomad-lab-<sha1(repo path)[:8]>` with Vagrant's state in
`<repo>/.lab/vagrant`; any other lab's is `nomad-lab-<hash>-<lab id>` with its state in
`<repo>/.lab/labs/<lab id>/`. The lab's `vm.json` keeps the SSH forward's port, the box, the
accel and the kernel command line so later calls (and other engineers' shells) reuse them.
`up()` is idempotent and fast when the VM is already running and SSH answers; it also removes
a libvirt domain of the same name that Vagrant no longer knows (a crashed run, a fresh clone
in the same place).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from lab.core import wait
from lab.core.config import ROOT, LabConfig
from lab.core.errors import LabError
from lab.core.subrun import lines_until_deadline
from lab.provision import accel as accel_mod
from lab.provision import box as box_mod
from lab.provision import hostsetup, kernels, labs
from lab.remote.host import SSHSpec, free_local_port

LIBVIRT_URI = hostsetup.LIBVIRT_URI
VAGRANT_CLEANUP_S = 180  # an interrupted `vagrant up` destroying its half-made domain
STORAGE_POOL = hostsetup.STORAGE_POOL
# Only these survive into vagrant's environment, plus the LAB_* settings we set.
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "VAGRANT_HOME",
              "XDG_CACHE_HOME", "TMPDIR")

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS = re.compile(r"Progress: (\d+)%")

Out = Callable[[str], None]
Runner = Callable[..., subprocess.CompletedProcess]


class VagrantError(LabError):
    """A vagrant or libvirt step for the lab VM failed."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def vm_name_for(repo: Path, spec: labs.LabSpec | None = None) -> str:
    base = "nomad-lab-" + hashlib.sha1(str(repo.resolve()).encode()).hexdigest()[:8]
    return labs.vm_name(base, spec or labs.LabSpec())


def ssh_banner(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> str:
    """The SSH server's banner, or '' (QEMU's hostfwd accepts even when sshd is not up, then
    closes: only a banner proves the guest's sshd answers)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(64)
    except OSError:
        return ""
    return data.decode(errors="replace").strip() if data.startswith(b"SSH-") else ""


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # Like QEMU's hostfwd listener: our own recent connections in TIME_WAIT don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class VagrantVM:
    def __init__(self, config: object = None, *, out: Out = print, run: Runner = _run):
        if config is None:
            config = LabConfig.load()
        self.config = config
        self.out = out
        self.run = run
        self.repo = Path(getattr(config, "root", ROOT))
        self.lab = labs.LabSpec.from_config(config)
        # The checkout's state dir (accel decision, serial logs); the lab's own is below it.
        self.root_state_dir = Path(getattr(config, "state_dir", self.repo / ".lab"))
        self.state_dir = labs.state_dir(self.root_state_dir, self.lab)
        self.cache_dir = box_mod.lab_cache_dir(config)
        self.name = vm_name_for(self.repo, self.lab)
        self.cpus = int(getattr(config, "cpus", LabConfig.cpus))
        self.memory = int(getattr(config, "memory_mb", LabConfig.memory_mb))
        # Set by up(): the VM was running before and still is, not restarted (a lease taken
        # on it before up() still holds).
        self.kept_running = False
        self._answered_at: float | None = None  # when answers() last saw sshd's banner
        self.release = self.lab.release
        self.cmdline = self.lab.cmdline()

    # ---- persisted state ----------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "vm.json"

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, **changes) -> dict:
        state = {**self._state(), **changes}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        return state

    def _ssh_port(self) -> int:
        port = self._state().get("ssh_port")
        if not port:
            port = self._save_state(ssh_port=free_local_port())["ssh_port"]
        return int(port)

    def ssh_spec(self) -> SSHSpec:
        key = box_mod.lab_cache_dir(self.config) / "ssh" / "id_ed25519"
        return SSHSpec("127.0.0.1", self._ssh_port(), box_mod.BOX_USER, key)

    @property
    def serial_log(self) -> Path:
        """The guest's serial console (the kernel's console=ttyS0), kept in a file: the last
        words of a guest that panicked or hung, when SSH no longer answers."""
        return self.root_state_dir.resolve() / f"{self.name}.serial.log"

    # ---- environment for vagrant --------------------------------------------------------

    def vagrant_env(self, box: box_mod.Box | None = None, accel: str | None = None) -> dict:
        state = self._state()
        box_name = box.name if box else state.get("box", "")
        spec = self.ssh_spec()
        lab = {
            "LAB_BOX_NAME": box_name,
            "LAB_VM_NAME": self.name,
            "LAB_CPUS": str(self.cpus),
            "LAB_MEMORY": str(self.memory),
            "LAB_ACCEL": accel or state.get("accel", "tcg"),
            "LAB_SSH_PORT": str(spec.port),
            "LAB_SSH_KEY": str(spec.key_file),
            "LAB_SSH_USER": spec.user,
            "LAB_SERIAL_LOG": str(self.serial_log),
            "LAB_CMDLINE": self.cmdline,
        }
        if box_name:
            installed = box_mod.installed_box_dir(box_name)
            # LAB_KERNEL: the kernel installed in this VM's guest, once it is (_ensure_kernel).
            lab["LAB_BOOT_KERNEL"] = state.get("boot_kernel") or str(installed / "vmlinuz")
            lab["LAB_BOOT_INITRD"] = state.get("boot_initrd") or str(installed / "initrd.img")
        return {
            **{k: os.environ[k] for k in PASSED_ENV if k in os.environ},
            **lab,
            "VAGRANT_CWD": str(self.repo),
            "VAGRANT_DOTFILE_PATH": str(self.state_dir / "vagrant"),
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "VAGRANT_CHECKPOINT_DISABLE": "1",  # no calls home: the lab's network is loopback
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "LIBVIRT_DEFAULT_URI": LIBVIRT_URI,
        }

    def shell_env(self) -> str:
        """`export` lines to run vagrant by hand from the repo (vagrant ssh, vagrant status)."""
        env = self.vagrant_env()
        keys = [k for k in env if k.startswith(("LAB_", "VAGRANT_", "LIBVIRT_"))]
        return "\n".join(f"export {k}={shlex.quote(env[k])}" for k in keys)

    def ssh_config(self, host_alias: str = "nomad-lab") -> str:
        """An OpenSSH config block, like `vagrant ssh-config` but without running vagrant."""
        spec = self.ssh_spec()
        return (f"Host {host_alias}\n  HostName {spec.host}\n  Port {spec.port}\n"
                f"  User {spec.user}\n  IdentityFile {spec.key_file}\n  IdentitiesOnly yes\n"
                "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")

    # ---- libvirt view (fast: no vagrant) ------------------------------------------------

    def _virsh(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["virsh", "-c", LIBVIRT_URI, *args])

    def domain_state(self) -> str:
        """libvirt's state of our domain ('running', 'shut off', ...) or 'not created'."""
        res = self._virsh("domstate", self.name)
        return res.stdout.strip() if res.returncode == 0 else "not created"

    def answers(self) -> bool:
        """The domain runs and its sshd sends a banner (~0.5 s under TCG: sshd forks and
        re-executes itself for every connection)."""
        if self.domain_state() != "running" or not ssh_banner(self._ssh_port()):
            return False
        self._answered_at = time.monotonic()
        return True

    def _answered_recently(self) -> bool:
        """answers() saw the banner moments ago (lab.up asks before it leases the VM)."""
        return self._answered_at is not None and time.monotonic() - self._answered_at < 10

    def status(self) -> str:
        state = self.domain_state()
        if state == "running":
            port = self._ssh_port()
            banner = ssh_banner(port)
            return f"running, ssh 127.0.0.1:{port} " + ("answers" if banner else "not answering")
        return state

    def _vagrant_machine_id(self) -> str:
        id_file = self.state_dir / "vagrant" / "machines" / self.name / "libvirt" / "id"
        try:
            return id_file.read_text().strip()
        except OSError:
            return ""

    def _domain_uuid(self) -> str:
        res = self._virsh("domuuid", self.name)
        return res.stdout.strip() if res.returncode == 0 else ""

    def _remove_domain(self, why: str) -> None:
        """Remove our-named domain and its disk behind Vagrant's back (Vagrant lost track)."""
        self.out(f"vm: removing libvirt domain {self.name}: {why}")
        self._virsh("destroy", self.name)  # fails harmlessly when not running
        res = self._virsh("undefine", self.name, "--managed-save", "--snapshots-metadata")
        if res.returncode != 0 and "failed to get domain" not in res.stderr:
            raise VagrantError(f"cannot undefine stale domain {self.name}: {res.stderr.strip()}; "
                               f"fix: virsh -c {LIBVIRT_URI} undefine {self.name}")
        self._virsh("vol-delete", "--pool", STORAGE_POOL, f"{self.name}.img")
        machine_dir = self.state_dir / "vagrant" / "machines" / self.name
        for leftover in machine_dir.glob("libvirt/*"):
            if leftover.is_file():
                leftover.unlink()

    # ---- vagrant ------------------------------------------------------------------------

    def _vagrant(self, *args: str, env: dict | None = None) -> str:
        """Run vagrant with a clean env, streaming its output prefixed; raise with the tail."""
        cmd = ["vagrant", *args]
        tail: deque[str] = deque(maxlen=40)
        proc = subprocess.Popen(cmd, cwd=self.repo, env=env or self.vagrant_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        assert proc.stdout is not None
        shown_progress = -1
        deadline = self.config.timeout("vm_up") if hasattr(self.config, "timeout") else 3600
        for raw in lines_until_deadline(
                proc, deadline, f"`vagrant {' '.join(args)}` for VM {self.name}",
                hint="vagrant went silent or hung: `invoke lab.destroy` then `invoke lab.up`; "
                     f"libvirt's log: /var/log/libvirt/qemu/{self.name}.log",
                # Interrupted, vagrant rolls back a half-made VM: give it time (a second
                # Ctrl-C still ends it at once) rather than leave libvirt half-done.
                grace_s=VAGRANT_CLEANUP_S):
            line = ANSI.sub("", raw).rstrip()
            if not line:
                continue
            progress = PROGRESS.search(line)
            if progress:  # the box upload redraws a percentage hundreds of times
                percent = int(progress.group(1))
                if percent // 25 == shown_progress // 25 and percent != 100:
                    continue
                shown_progress = percent
            tail.append(line)
            self.out(f"vagrant: {line}")
        rc = proc.wait()
        if rc != 0:
            text = "\n".join("    " + x for x in tail)
            raise VagrantError(
                f"`vagrant {' '.join(args)}` exited {rc} for VM {self.name}:\n{text}\n"
                f"fix: read the lines above; `invoke lab.destroy` then `invoke lab.up` starts "
                f"over; libvirt's log: /var/log/libvirt/qemu/{self.name}.log")
        return "\n".join(tail)

    def prepare(self) -> tuple[box_mod.Box, accel_mod.Accel]:
        """Host packages and libvirtd, the box, and the accel decision (all cached)."""
        self.lab.check()  # before anything is built or booted
        hostsetup.ensure_host(out=self.out)
        box = box_mod.ensure_box(self.config, self.release, out=self.out)
        configured = getattr(self.config, "accel", "auto")
        env = dict(os.environ)
        if configured in ("kvm", "tcg"):
            env["LAB_ACCEL"] = configured
        elif env.get("LAB_ACCEL", "").lower() == "auto":
            env.pop("LAB_ACCEL")
        accel = accel_mod.detect_accel(box.kernel, box.initrd, self.cache_dir, env=env,
                                       out=self.out)
        # lab/core/config.py reads this (in the checkout's state dir) to scale timeouts.
        self.root_state_dir.mkdir(parents=True, exist_ok=True)
        (self.root_state_dir / "accel.json").write_text(json.dumps(
            {"accel": accel.name, "timeout_scale": accel.timeout_scale,
             "reason": accel.reason}) + "\n")
        return box, accel

    def up(self) -> SSHSpec:
        """Bring the VM up (idempotent) and return how to reach it over SSH."""
        start = time.monotonic()
        box, accel = self.prepare()
        state = self._state()
        domain = self.domain_state()
        uuid = self._domain_uuid() if domain != "not created" else ""

        if domain != "not created" and uuid != self._vagrant_machine_id():
            self._remove_domain("Vagrant has no record of it (left by an earlier run or clone)")
            domain = "not created"
        elif domain != "not created" and self._changed(state, box, accel):
            self.out(f"vm: recreating {self.name}: {self._changed(state, box, accel)}")
            self.destroy()
            domain = "not created"

        port = self._ssh_port()
        if domain == "running" and (self._answered_recently() or ssh_banner(port)):
            self.out(f"vm: {self.name} already running, ssh 127.0.0.1:{port} "
                     f"({time.monotonic() - start:.1f}s)")
            self.kept_running = not self._ensure_kernel(box, accel, port)
            return self.ssh_spec()
        if domain != "running" and not port_is_free(port):
            if domain != "not created":  # its XML holds the old port: recreate with a new one
                self._remove_domain(f"its SSH port {port} is now taken by another process")
            port = self._save_state(ssh_port=free_local_port())["ssh_port"]
            self.out(f"vm: SSH port taken; using 127.0.0.1:{port}")

        if domain == "not created":  # a new disk: the box's kernel until one is installed
            self._save_state(boot_kernel="", boot_initrd="", kernel_for="")
        self._save_state(box=box.name, accel=accel.name, vm_name=self.name, lab=self.lab.id,
                         cmdline=self.cmdline)
        env = self.vagrant_env(box, accel.name)
        # The Vagrantfile falls back to these, so plain `vagrant ssh` works from the repo.
        (self.state_dir / "vagrant-env.json").write_text(json.dumps(
            {k: v for k, v in env.items() if k.startswith("LAB_")}, indent=2) + "\n")
        self.out(f"vm: vagrant up {self.name}: lab {self.lab.describe()}, box {box.name}, "
                 f"{accel.name}, {self.cpus} cpus, {self.memory} MiB, ssh 127.0.0.1:{port}")
        t = time.monotonic()
        self._vagrant("up", "--provider", "libvirt", env=env)
        # `vagrant up` on an already running domain returns without waiting for SSH.
        self._wait_for_sshd(port)
        self.out(f"vm: up in {time.monotonic() - t:.1f}s (total {time.monotonic() - start:.1f}s)")
        (self.state_dir / "ssh_config").write_text(self.ssh_config())
        self._ensure_kernel(box, accel, port)
        box_mod.prune_old_boxes(box, self.cache_dir, out=self.out, run=self.run)
        return self.ssh_spec()

    def _ensure_kernel(self, box: box_mod.Box, accel: accel_mod.Accel, port: int) -> bool:
        """LAB_KERNEL: install the kernel package in the guest (its modules; the initrd made
        there) and reboot the VM into it by direct kernel boot; once per VM. True when it
        rebooted the VM."""
        if not self.lab.kernel or self._state().get("kernel_for") == self.lab.kernel:
            return False
        from lab.remote.host import LabHost

        t = time.monotonic()
        host = LabHost(self.ssh_spec(), name=self.name)
        try:
            vmlinuz, initrd, kver = kernels.install(self.lab.kernel, self.release, self.cache_dir,
                                                    box_mod.debian_mirror(), box.hash, host,
                                                    self.out)
        finally:
            host.close()
        self._save_state(boot_kernel=str(vmlinuz), boot_initrd=str(initrd))
        self.out(f"kernel: rebooting {self.name} into {kver}")
        self._vagrant("halt")
        env = self.vagrant_env(box, accel.name)
        (self.state_dir / "vagrant-env.json").write_text(json.dumps(
            {k: v for k, v in env.items() if k.startswith("LAB_")}, indent=2) + "\n")
        self._vagrant("up", "--provider", "libvirt", env=env)
        self._wait_for_sshd(port)
        host = LabHost(self.ssh_spec(), name=self.name)
        try:
            booted = host.run("uname -r; uname -v; cat /proc/cmdline").stdout.splitlines()
        finally:
            host.close()
        if not booted or booted[0] != kver:
            raise VagrantError(f"{self.name} booted {booted[:1]} instead of {kver} from "
                               f"{vmlinuz}; see {self.serial_log}")
        self._save_state(kernel_for=self.lab.kernel, kernel=kver)
        self.out(f"kernel: {self.name} runs {' | '.join(booted)} "
                 f"({time.monotonic() - t:.0f}s for install and reboot)")
        return True

    def _changed(self, state: dict, box: box_mod.Box, accel: accel_mod.Accel) -> str:
        """Why the existing VM no longer fits, or '' (a VM recorded before the command line
        was kept is taken to have the current one)."""
        if state.get("box") != box.name:
            return f"box changed to {box.name}"
        if state.get("accel") != accel.name:
            return f"accel changed to {accel.name}"
        if state.get("cmdline", self.cmdline) != self.cmdline:
            return f"kernel command line changed to {self.cmdline!r}"
        return ""

    def _wait_for_sshd(self, port: int) -> None:
        timeout_of = getattr(self.config, "timeout", None)
        timeout = timeout_of("ssh") if callable(timeout_of) else 120.0

        def banner() -> str | wait.Pending:
            return ssh_banner(port) or wait.Pending(f"no SSH banner on 127.0.0.1:{port}, "
                                                    f"domain {self.domain_state()}")
        wait.until(banner, timeout, f"sshd of VM {self.name}",
                   hint=f"the guest may be hung: see `virsh -c {LIBVIRT_URI} console "
                        f"{self.name}`, or `invoke lab.destroy` and `invoke lab.up`")

    def restart(self, why: str) -> SSHSpec:
        """Power the VM off at once (a panicked or hung guest cannot shut itself down) and
        boot it again, as up() would."""
        self.out(f"vm: restarting {self.name}: {why}")
        began = time.monotonic()
        self._virsh("destroy", self.name)  # fails harmlessly when it is not running
        self._answered_at = None
        # The domain is as `vagrant up` defined it: libvirt starts it without Vagrant's own
        # start-up and checks (~30 s of the 74 s that `vagrant up` took here under TCG).
        started = self._virsh("start", self.name)
        if started.returncode != 0:
            raise VagrantError(f"could not start {self.name} again: {started.stderr.strip()}; "
                               "fix: `invoke lab.destroy` then `invoke lab.up`")
        self._wait_for_sshd(self._ssh_port())
        (self.state_dir / "restarted-at").write_text(f"{time.time()}\n")
        self.out(f"vm: {self.name} restarted in {time.monotonic() - began:.1f}s")
        return self.ssh_spec()

    @contextlib.contextmanager
    def restart_lock(self) -> Iterator[None]:
        """One restart at a time: the xdist workers on this VM each notice that it was lost."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "restart.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def restarted_after(self, when: float) -> bool:
        """restart() ended after `when` (time.time()): a loss noticed then is over."""
        try:
            return float((self.state_dir / "restarted-at").read_text()) > when
        except (OSError, ValueError):
            return False

    def halt(self) -> None:
        if self.domain_state() == "not created":
            self.out(f"vm: {self.name} not created")
            return
        self._vagrant("halt")

    def destroy(self) -> None:
        """Remove the VM and its disk; the box, the key and the port stay for the next up."""
        if self._vagrant_machine_id():
            self._vagrant("destroy", "--force")
        if self.domain_state() != "not created":
            self._remove_domain("still defined after vagrant destroy")
        if self.state_file.exists():
            self._save_state(boot_kernel="", boot_initrd="", kernel_for="")
