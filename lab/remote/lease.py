"""The lab host's lease: one run at a time changes a lab host, whoever asks and however the
host was spelled.

The lock lives on the lab host itself (`flock` on LOCK_FILE, held by a command that stays on an
SSH channel of ours), so two clones, two spellings of one target or two machines exclude each
other. If the holder dies, its SSH connection drops, the command ends and the lock is free:
nothing to clean up. The holder writes who it is (command, pid, machine, since when) to
HOLDER_FILE, so a waiter can say whom it waits for, and gives up at a deadline.

Runs started by the holder (xdist workers, nested test runs, `invoke test` -> pytest) inherit
its token through LEASE_ENV and share the lease instead of waiting for it; a lease they take
(another lab host of the run, or the same one after it restarted) carries the same token.
After a restart the holder's lock died with the guest, and each worker of the run takes the lock
again, shared (`flock -s`): the lease then lasts until the last of them ends, and another run's
exclusive lock waits for all of them. The holder file goes only when nobody holds the lock.
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lab.core.errors import LabError, LabTimeout
from lab.remote.host import LabHost

LEASE_ENV = "LAB_LEASE"
BUSY_RC = 75  # flock -n's exit code when another run holds the lock (EX_TEMPFAIL)
LOCK_FILE = "/run/nomad-lab.lease"
HOLDER_FILE = "/run/nomad-lab.lease-holder"


class LeaseBusy(LabTimeout):
    """The lab host stayed leased by another run until the deadline."""


def holder(host: LabHost) -> str:
    """Who holds the lease now ("" when nobody does)."""
    res = host.sudo(f"flock -n {LOCK_FILE} true && exit 0; cat {HOLDER_FILE} 2>/dev/null",
                    check=False)
    return res.stdout.strip()


@contextmanager
def hold(host: LabHost, what: str, timeout: float, out=print, *,
         shared: bool = False) -> Iterator[str]:
    """Hold the lab host's lease for the block (or share the one our parent holds).

    shared: take the lock as one of several holders of this run (its workers after the lab
    host restarted), even when another of them holds it already."""
    inherited = os.environ.get(LEASE_ENV)
    if inherited and not shared and f"token={inherited}" in holder(host):
        yield inherited
        return
    # A run with several lab hosts leases each with one token, so that its workers, whichever
    # host they are bound to, share the lease through the one LEASE_ENV they inherit; so does a
    # run that takes a lease again after its lab host restarted.
    token = inherited or secrets.token_hex(6)
    who = (f"token={token} command={what!r} pid={os.getpid()} on={socket.gethostname()} "
           f"since={time.strftime('%Y-%m-%d %H:%M:%S')}")
    # `cat` holds the lock until our side of the channel closes (we release, or we die).
    # One round trip: a free lock is taken at once (one flock); a held one first prints
    # WAITING and its holder, then flock waits.
    inner = f'printf "%s\\n" "$1" > {HOLDER_FILE}; echo LEASED; cat >/dev/null'
    ours, cleanup = "", ""
    if shared:
        # Busy for a shared lock means an exclusive one: if it is our own run's (it outlived
        # what made us lease again), share it as the run's workers always do.
        ours = (f'grep -q "^token={token} " {HOLDER_FILE} 2>/dev/null && '
                "{ echo OURS; exit 0; }; ")
        # Released: the record goes once no other worker holds the lock.
        cleanup = f"; flock -n {LOCK_FILE} rm -f {HOLDER_FILE} 2>/dev/null; true"
    else:
        inner += f"; rm -f {HOLDER_FILE}"
    take = (f"{'-s ' if shared else ''}{LOCK_FILE} sh -c {shlex.quote(inner)} lease "
            f"{shlex.quote(who)}")
    # flock failing for another reason (the lock file cannot be opened) says FAILED <rc>.
    script = (f"flock -n -E {BUSY_RC} {take}; rc=$?; "
              f"if [ $rc = {BUSY_RC} ]; then {ours}"
              f"echo \"WAITING $(cat {HOLDER_FILE} 2>/dev/null)\"; "
              f"flock -w {max(1, round(timeout))} -E {BUSY_RC} {take}; rc=$?; "
              f"[ $rc = {BUSY_RC} ] && {{ echo BUSY; cat {HOLDER_FILE} 2>/dev/null; exit 0; }}; "
              f"fi; [ $rc = 0 ] || echo \"FAILED $rc\"{cleanup}")
    # Its own SSH connection: a reconnect of the host's main one must not end the lease.
    # The main one opens meanwhile (each costs ~1.3 s under TCG: sshd's fork and re-exec,
    # key exchange, the first session).
    opener = threading.Thread(target=_open_quietly, args=(host,), daemon=True)
    opener.start()
    own = LabHost(host.spec, name=f"{host.name}-lease", connect_timeout=30)
    try:
        channel = own.open_channel(script, sudo=True)
    finally:
        opener.join()
    try:
        # Whole lines only: a holder's line (its command) may contain any word.
        answer = _read_until(channel, lambda t: _line(t, "LEASED") or _line(t, "WAITING ")
                             or _line(t, "FAILED ") or _line(t, "OURS"), timeout + 30)
        if _line(answer, "OURS"):
            yield token  # our run's own lock holds the lab host: nothing of ours to release
            return
        busy = _line(answer, "WAITING ").removeprefix("WAITING ").strip()
        if not _line(answer, "LEASED") and _line(answer, "WAITING "):
            out(f"lab: the lab host {host.spec.url} is leased by another run "
                f"({_readable(busy) or 'holder not recorded'}); waiting up to {timeout:.0f}s")
            answer = _read_until(channel, lambda t: _line(t, "LEASED") or _line(t, "BUSY")
                                 or _line(t, "FAILED "), timeout + 30, answer)
        failed = _line(answer, "FAILED ")
        if failed and not _line(answer, "LEASED"):
            raise LabError(f"the lease of lab host {host.spec.url} could not be taken: flock on "
                           f"{LOCK_FILE} exited {failed.removeprefix('FAILED ')}, not because "
                           "another run holds it; fix: on the lab host, `sudo flock -n "
                           f"{LOCK_FILE} true` shows why (a full or read-only /run?)")
        if not _line(answer, "LEASED"):
            lines = answer.split("\n")
            after = lines[lines.index("BUSY") + 1:] if "BUSY" in lines else []
            last = " ".join(after).strip() or busy
            raise LeaseBusy(f"the lease of lab host {host.spec.url}", timeout,
                            _readable(last) or "held by another run",
                            "fix: wait for that run to end, or stop it; its lease ends with "
                            "its SSH connection")
        previous = os.environ.get(LEASE_ENV)
        os.environ[LEASE_ENV] = token
        try:
            yield token
        finally:
            _restore_env(previous)
    finally:
        try:
            channel.shutdown_write()  # EOF to `cat`: the holder file goes, the lock is free
            _read_until(channel, lambda t: False, 10)
        except (OSError, EOFError, LabError):
            pass
        channel.close()
        own.close()


def _open_quietly(host: LabHost) -> None:
    """Open host's connection now; a failure shows, with its reason, at its first command."""
    try:
        host.transport()
    except LabError:
        pass


def _read_until(channel, done: Callable[[str], bool], timeout: float, text: str = "") -> str:
    """Read the channel's stdout, after what was read already, until done(all of it) (or
    until it closes); returns all of it."""
    deadline = time.monotonic() + timeout
    channel.settimeout(1.0)
    while time.monotonic() < deadline:
        if done(text):
            return text
        try:
            chunk = channel.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            return text
        text += chunk.decode(errors="replace")
    raise LabError(f"no answer from the lease command within {timeout:.0f}s; saw: {text!r}")


def _line(text: str, start: str) -> str:
    """The first complete line of text that is `start`, or begins with it when it ends in a
    space; '' if none."""
    for line in text.split("\n")[:-1]:
        if line == start or (start.endswith(" ") and line.startswith(start)):
            return line
    return ""


def _readable(line: str) -> str:
    return " ".join(part for part in line.split() if not part.startswith("token="))


def _restore_env(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(LEASE_ENV, None)
    else:
        os.environ[LEASE_ENV] = previous
