"""Resolve the configured target (the Vagrant VM or ssh://user@host[:port]) to a LabHost."""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lab.config import LabConfig
from lab.errors import LabError
from lab.host import LabHost, SSHSpec


def ssh_spec(config: LabConfig) -> SSHSpec:
    if config.is_vagrant:
        from lab.vm import VagrantVM  # only the VM target needs Vagrant

        return VagrantVM(config).ssh_spec()
    return SSHSpec.from_url(config.target, config.ssh_key or None)


def connect(config: LabConfig, check_ready: bool = True) -> LabHost:
    """A LabHost for the target; with check_ready, fail unless the lab was brought up."""
    host = LabHost(ssh_spec(config), name="vm" if config.is_vagrant else config.target,
                   connect_timeout=config.timeout("ssh"),
                   command_timeout=config.timeout("command"))
    if check_ready:
        from lab.agent import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR

        res = host.run(f"test -x {NOMAD_BIN} && test -x {PLUGIN_DIR}/{PLUGIN_BINARY}",
                       check=False)
        if not res.ok:
            raise LabError(f"the lab host {host.spec.url} has no Nomad/plugin binaries "
                           f"({res.stderr.strip() or 'missing'}): run `./invoke lab.up` "
                           "(or `./invoke lab.push` after a rebuild)")
    return host


@contextmanager
def exclusive(config: LabConfig, out=print) -> Iterator[None]:
    """Hold the lab host for this process: one Nomad agent per host (nomad.slice is shared).

    A lock file per target in the checkout's state dir; a second run waits (and says so)
    instead of sweeping away the first run's agent.
    """
    config.state_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.target)
    path = config.state_dir / f"lock-{name}"
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            out(f"lab: waiting for the run holding {config.target} ({fh.read().strip()}; "
                f"lock {path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
