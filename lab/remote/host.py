"""LabHost: one object for the lab host over SSH (Fabric), whatever is behind it.

The Vagrant VM and an `ssh://user@host[:port]` target go through the same code: everything
after the VM step only sees an SSHSpec. Commands return a CommandResult; failures raise
CommandFailed naming the host, the command, its exit code and the tail of its stderr.

A connection that drops (sshd killed, the VM's network hiccups) is re-opened under one
deadline and the command is run again, so the lab's remote commands are written to be safe
to repeat; tunnels are re-attached to the new connection (lab/remote/tunnels.py). Only a host
that stays unreachable fails, with ConnectionLost naming when it dropped and how long we tried.

A host the guest watch (lab/checks/guest_watch.py) declared lost (its kernel panicked, it
stopped answering) is not waited for: every command fails at once with HostLost, and commands
under way are cut, until recovered() says the host was restarted.
"""

from __future__ import annotations

import io
import random
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import fabric
import invoke
import paramiko

from lab.core.errors import CommandFailed, LabError, LabTimeout
from lab.core.wait import Pending, until
from lab.remote.tunnels import LocalForward, RemoteForward

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
# What a dropped connection raises, depending on where Fabric/paramiko noticed it.
SSH_DROPPED = (paramiko.SSHException, OSError, EOFError, invoke.exceptions.ThreadException)


class ConnectionLost(CommandFailed):
    """The SSH connection to the lab host dropped and could not be re-opened in time."""


class HostLost(LabError):
    """The lab host was declared lost (lab/checks/guest_watch.py): no command is tried."""


@dataclass(frozen=True)
class SSHSpec:
    host: str
    port: int
    user: str
    key_file: Path | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, key_file: str | Path | None = None) -> SSHSpec:
        parsed = urlparse(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise LabError(f"target {url!r} is not an ssh:// URL: use ssh://user@host[:port]")
        return cls(parsed.hostname, parsed.port or 22, parsed.username or "root",
                   Path(key_file).expanduser() if key_file else None)


@dataclass
class CommandResult:
    cmd: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


# sshd's per-connection processes: `sshd` up to OpenSSH 9.7 (bullseye, bookworm),
# `sshd-session` from 9.8 on (trixie), where `sshd` is the listener only.
SSHD_NAMES = ("sshd", "sshd-session")


# From the shell up to init, with bash builtins only (no `ps` per step): each process's pid,
# name and title. A process gone meanwhile ends the walk (its parent reads as 1).
ANCESTRY_WALK = ('pid=$$; while [ "$pid" -gt 1 ]; do '
                 'read -r comm < "/proc/$pid/comm"; '
                 'IFS= read -r -d "" title < "/proc/$pid/cmdline"; '
                 'echo "$pid $comm $title"; parent=1; '
                 'while read -r key value; do [ "$key" = PPid: ] && { parent=$value; break; }; '
                 'done < "/proc/$pid/status"; pid=$parent; done')


def sshd_session_pids(walk: str) -> list[int]:
    """From "pid name title" lines (a process and its ancestors), the sshd processes of the
    connection: never the listener (title "... [listener] ..."), which serves every other
    connection and which killing would not cut this one."""
    pids = []
    for line in walk.splitlines():
        pid, name, title = (line.split(" ", 2) + ["", ""])[:3]
        if name in SSHD_NAMES and "[listener]" not in title:
            pids.append(int(pid))
    return pids


class LabHost:
    """Run commands, move files and open tunnels on the lab host."""

    def __init__(self, spec: SSHSpec, name: str = "lab", connect_timeout: float = 30,
                 command_timeout: float = 120, reconnect_timeout: float | None = None):
        self.spec, self.name = spec, name
        self.command_timeout = command_timeout
        # A dropped connection is re-opened within this (a rebooting VM is not waited for).
        self.reconnect_timeout = connect_timeout if reconnect_timeout is None \
            else reconnect_timeout
        self._connected_once = False  # a first connection that fails is not "dropped"
        self._remote_forwards: list[RemoteForward] = []
        self._reopen_lock = threading.Lock()  # tunnel threads and the caller may both notice
        self.lost = ""  # why the host was declared lost; "" while it is not
        connect_kwargs: dict = {"allow_agent": False, "look_for_keys": spec.key_file is None,
                                "banner_timeout": connect_timeout,
                                "auth_timeout": connect_timeout}
        if spec.key_file:
            connect_kwargs["key_filename"] = [str(spec.key_file)]
        self._conn = fabric.Connection(
            spec.host, user=spec.user, port=spec.port, connect_timeout=connect_timeout,
            connect_kwargs=connect_kwargs,
            config=fabric.Config(overrides={"load_ssh_configs": False}),
        )

    def __repr__(self) -> str:
        return f"LabHost({self.name} {self.spec.url})"

    @property
    def is_root(self) -> bool:
        return self.spec.user == "root"

    # -- commands ------------------------------------------------------------------------
    def run(self, cmd: str, *, check: bool = True, timeout: float | None = None,
            sudo: bool = False, hint: str = "") -> CommandResult:
        """Run `cmd` with bash; with sudo=True as root (sudo -n unless we are root)."""
        wrapped = f"bash -c {shlex.quote(cmd)}"
        if sudo and not self.is_root:
            wrapped = f"sudo -n {wrapped}"
        try:
            res = self._reconnecting(cmd, lambda: self._run_once(wrapped, timeout))
        except invoke.CommandTimedOut as exc:
            raise CommandFailed(self.name, cmd, None, f"timed out after {exc.timeout}s",
                                hint=hint or "the lab host is slow or the command hangs; "
                                "raise LAB_TIMEOUT_SCALE or inspect with `invoke lab.ssh`") from exc
        result = CommandResult(cmd, res.return_code, res.stdout, res.stderr)
        if check and not result.ok:
            raise CommandFailed(self.name, cmd, result.rc, result.stderr, result.stdout, hint)
        return result

    def _run_once(self, wrapped: str, timeout: float | None):
        res = self._conn.run(wrapped, hide=True, warn=True, in_stream=False,
                             timeout=timeout or self.command_timeout)
        if res.return_code == -1 and not self._conn.is_connected:
            # paramiko's "no exit status": the channel closed under the command.
            raise EOFError("the connection closed before the command's exit status arrived")
        return res

    # -- a lost host ----------------------------------------------------------------------
    def declare_lost(self, why: str) -> None:
        """From now on every command fails at once with HostLost(why); the connection is
        closed, so that commands under way end now instead of at their timeouts."""
        self.lost = why
        self._conn.close()

    def recovered(self) -> None:
        """The host was restarted: commands reconnect again."""
        self.lost = ""

    def _refuse_if_lost(self) -> None:
        if self.lost:
            raise HostLost(f"the lab host {self.spec.url} was declared lost: {self.lost}")

    def _reconnecting(self, what: str, call: Callable):
        """call(), re-opening a dropped connection and calling once more."""
        self._refuse_if_lost()
        if self._connected_once and not self._conn.is_connected:
            # Closed since the last command (the host restarted, or declare_lost closed it):
            # re-opened here, not by Fabric on its own, so that the remote forwards come along.
            self._reopen(what, EOFError("the SSH connection had closed"))
        try:
            result = call()
        except SSH_DROPPED as exc:
            self._refuse_if_lost()
            if not self._connected_once:
                self._conn.close()
                raise CommandFailed(self.name, what, None, f"SSH failed: {exc}",
                                    hint=f"is the lab host up? `invoke lab.status` "
                                    f"(target {self.spec.url})") from exc
            self._reopen(what, exc)
            try:
                result = call()
            except SSH_DROPPED as again:
                self._conn.close()
                raise ConnectionLost(self.name, what, None, "the SSH connection to the lab host "
                                     f"dropped again right after it was re-opened: {again}",
                                     hint=f"is the lab host up? `invoke lab.status` "
                                     f"(target {self.spec.url})") from again
        self._connected_once = True
        return result

    def _reopen(self, what: str, cause: BaseException) -> None:
        """Re-open the dropped connection and its remote forwards, or raise ConnectionLost."""
        with self._reopen_lock:
            if self._conn.is_connected:
                return  # another thread re-opened it meanwhile
            self._reopen_locked(what, cause)

    def _reopen_locked(self, what: str, cause: BaseException) -> None:
        dropped_at = time.strftime("%H:%M:%S")
        self._conn.close()

        def reopen():
            try:
                self._conn.open()
                transport = self._conn.client.get_transport()
                for forward in self._remote_forwards:
                    forward.attach(transport)
                return True
            except SSH_DROPPED as exc:
                self._conn.close()
                return Pending(f"{type(exc).__name__}: {exc}")

        try:
            until(reopen, self.reconnect_timeout, f"the SSH connection to {self.spec.url}",
                  interval=0.2, max_interval=2.0)
        except LabTimeout as exc:
            raise ConnectionLost(
                self.name, what, None,
                f"the SSH connection to the lab host dropped at {dropped_at} "
                f"({type(cause).__name__}: {cause}) and could not be re-opened: tried until "
                f"{time.strftime('%H:%M:%S')} ({self.reconnect_timeout:.0f}s); last error: "
                f"{exc.last}",
                hint=f"is the lab host up? `invoke lab.status` (target {self.spec.url})",
            ) from cause

    def transport(self) -> paramiko.Transport:
        """The current SSH transport, re-opened if the connection dropped."""
        self._refuse_if_lost()
        if self._connected_once and not self._conn.is_connected:
            # Through _reopen, so that remote forwards are attached to the new transport.
            self._reopen("open an SSH channel", EOFError("the SSH connection had closed"))

        def current():
            if not self._conn.is_connected:
                self._conn.open()
            return self._conn.client.get_transport()
        return self._reconnecting("open an SSH channel", current)

    def session_pids(self) -> list[int]:
        """The lab host's sshd processes serving this connection (the per-connection [priv]
        process and the user's session process): what to kill to cut it from that side."""
        return sshd_session_pids(self.run(ANCESTRY_WALK).stdout)

    def sudo(self, cmd: str, **kwargs) -> CommandResult:
        return self.run(cmd, sudo=True, **kwargs)

    def open_channel(self, cmd: str, sudo: bool = False):
        """Start `cmd` on a channel of its own and return it (paramiko Channel): for a
        command that must live as long as we hold the channel (the lab host's lease)."""
        wrapped = f"bash -c {shlex.quote(cmd)}"
        if sudo and not self.is_root:
            wrapped = f"sudo -n {wrapped}"
        try:
            self._conn.open()
            channel = self._conn.client.get_transport().open_session()
            channel.exec_command(wrapped)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise CommandFailed(self.name, cmd, None, f"SSH failed: {exc}",
                                hint=f"is the lab host up? `invoke lab.status` "
                                f"(target {self.spec.url})") from exc
        return channel

    def run_script(self, name: str, args: list, **kwargs) -> CommandResult:
        """Run lab/remote/scripts/<name> with `args` on the lab host in one round trip, as root."""
        return self.sudo(script_command(name, args), **kwargs)

    def exists(self, path: str) -> bool:
        return self.sudo(f"test -e {shlex.quote(path)}", check=False).ok

    def read_file(self, path: str, *, missing_ok: bool = False) -> str:
        res = self.sudo(f"cat {shlex.quote(path)}", check=not missing_ok)
        return res.stdout if res.ok else ""

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        tmp = f"/tmp/.lab-upload-{random.getrandbits(40):x}"
        self._transfer(f"write {path}", lambda: self._conn.put(io.BytesIO(content.encode()), tmp))
        self.sudo(f"install -D -m {mode} {tmp} {shlex.quote(path)} && rm -f {tmp}")

    def put(self, local: str | Path, remote: str, mode: str = "0644") -> None:
        """Copy a file to `remote` (any path: staged in /tmp, installed as root)."""
        tmp = f"/tmp/.lab-upload-{random.getrandbits(40):x}"
        self._transfer(f"put {local} -> {remote}", lambda: self._conn.put(str(local), tmp))
        self.sudo(f"install -D -m {mode} {tmp} {shlex.quote(remote)}; rc=$?; rm -f {tmp}; "
                  "exit $rc")

    def get(self, remote: str, local: str | Path) -> None:
        self._transfer(f"get {remote} -> {local}", lambda: self._conn.get(remote, str(local)))

    def _transfer(self, what: str, call: Callable) -> None:
        """An SFTP transfer: re-run after a drop; a stall longer than the command timeout
        (no byte moved) fails it instead of hanging the run."""
        def once():
            self._conn.sftp().get_channel().settimeout(self.command_timeout)
            return call()
        try:
            self._reconnecting(what, once)
        except TimeoutError as exc:
            raise CommandFailed(self.name, what, None, f"no progress for "
                                f"{self.command_timeout:.0f}s", hint="is the lab host's disk "
                                "full or its network stalled? `invoke lab.status`") from exc

    # -- ports and tunnels ---------------------------------------------------------------
    def free_ports(self, count: int, low: int = 20000, high: int = 32000) -> list[int]:
        """Ports nothing listens on (TCP or UDP) on the lab host, picked at random."""
        used = {int(line.rsplit(":", 1)[-1]) for line in
                self.run("ss -Htanu | awk '{print $5}'", check=False).stdout.split()
                if line.rsplit(":", 1)[-1].isdigit()}
        pool = [p for p in range(low, high) if p not in used]
        return random.sample(pool, count)

    @contextmanager
    def forward_local(self, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """Tunnel 127.0.0.1:<yielded port> on this machine to remote_host:remote_port there."""
        def open_channel(origin):
            return self.transport().open_channel("direct-tcpip", (remote_host, remote_port),
                                                 origin)
        forward = LocalForward(open_channel)  # listening already: no race with a first request
        try:
            yield forward.port
        finally:
            forward.close()

    @contextmanager
    def forward_remote(self, local_port: int) -> Iterator[int]:
        """Expose 127.0.0.1:local_port of this machine as 127.0.0.1:<yielded port> there."""
        forward = RemoteForward(local_port)
        forward.attach(self.transport())  # the lab host picks a free port
        self._remote_forwards.append(forward)  # attached again after a reconnect
        try:
            yield forward.remote_port
        finally:
            self._remote_forwards.remove(forward)
            forward.detach(self._conn.client.get_transport() if self._conn.is_connected
                           else None)

    def close(self) -> None:
        self._conn.close()


def script_command(name: str, args: list, scripts_dir: Path = SCRIPTS_DIR) -> str:
    """The command line that runs <scripts_dir>/<name> remotely (lab/remote/scripts by
    default): its text travels inline, and the script sees its own name as $0."""
    script = (scripts_dir / name).read_text()
    return f"bash -c {shlex.quote(script)} {name} " + " ".join(shlex.quote(str(a)) for a in args)


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

