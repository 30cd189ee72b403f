"""Resolve the configured target (the Vagrant VM or ssh://user@host[:port]) to a LabHost."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.remote.host import LabHost, SSHSpec


def ssh_spec(config: LabConfig) -> SSHSpec:
    if config.is_vagrant:
        from lab.provision.vm import VagrantVM  # only the VM target needs Vagrant

        return VagrantVM(config).ssh_spec()
    return SSHSpec.from_url(config.target, config.ssh_key or None)


def connect(config: LabConfig, check_ready: bool = True) -> LabHost:
    """A LabHost for the target; with check_ready, fail unless the lab was brought up."""
    host = LabHost(ssh_spec(config), name="vm" if config.is_vagrant else config.target,
                   connect_timeout=config.timeout("ssh"),
                   command_timeout=config.timeout("command"))
    if check_ready:
        require_binaries(host)
    return host


def require_binaries(host: LabHost) -> None:
    from lab.remote.layout import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR, SHIM_PATH

    res = host.run(f"test -x {NOMAD_BIN} && test -x {PLUGIN_DIR}/{PLUGIN_BINARY} "
                   f"&& test -x {SHIM_PATH}", check=False)
    if not res.ok:
        raise LabError(f"the lab host {host.spec.url} has no Nomad/plugin binaries "
                       f"({res.stderr.strip() or 'missing'}): run `./invoke lab.up` "
                       "(or `./invoke lab.push` after a rebuild)")


@contextmanager
def leased(config: LabConfig, what: str, out=print, host: LabHost | None = None,
           check_ready: bool = False) -> Iterator[LabHost]:
    """Connect to the lab host and hold its lease (lab.remote.lease) for the block: every command
    that changes a lab host runs inside one. A run started by the holder shares it."""
    from lab.remote import lease

    host = host or connect(config, check_ready=False)
    with lease.hold(host, what, config.timeout("lease"), out):
        if check_ready:
            require_binaries(host)
        yield host
