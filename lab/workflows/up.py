"""`lab.up`: everything from a bare control host to a verified lab host, step by step.

Steps: host (packages, libvirtd), build (plugin, Nomad, test JARs), box, vm, provision,
push, verify. Each is idempotent, so a second run on a healthy lab only checks and is fast.
For an ssh:// target the host/box/vm steps are skipped: the rest is the same code path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json

from lab.checks import janitor
from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.core.steps import Steps
from lab.provision import build, target
from lab.provision.push import push
from lab.remote.host import LabHost

GUEST_SETUP = "provision/guest-setup.sh"


def up(config: LabConfig, out=print) -> Steps:
    steps = Steps("lab.up", out)
    if config.is_vagrant:
        from lab.provision import box, hostsetup, vm

        with steps.step("host"):
            hostsetup.ensure_host(out=out)
    with steps.step("build"):
        build_all(config, out)
    with contextlib.ExitStack() as lease:
        host = None
        if config.is_vagrant:
            with steps.step("box"):
                box.ensure_box(config, out=out)
            machine = vm.VagrantVM(config, out=out)
            with steps.step("vm"):
                # The vm step may destroy a running VM (its box or accel changed): not while
                # another run uses it. So a VM that answers is leased first, and the lease
                # kept for the steps below unless the VM was restarted (which ended it).
                if _answers(machine):
                    host = lease.enter_context(target.leased(config, "invoke lab.up", out))
                machine.up()
                if host is not None and not machine.kept_running:
                    lease.close()
                    host = None
        if host is None:
            host = lease.enter_context(target.leased(config, "invoke lab.up", out))
        with steps.step("provision"):
            out("provision: " + json.dumps(provision(host, config)))
        with steps.step("push"):
            changed = push(host, config, out)
        with steps.step("verify"):
            verify(host, out, run_binaries=bool(changed))
    out(steps.summary())
    return steps


def _answers(machine) -> bool:
    from lab.provision.vm import ssh_banner

    return machine.domain_state() == "running" and bool(ssh_banner(machine.ssh_spec().port))


def build_and_push(config: LabConfig, host: LabHost, out=print) -> Steps:
    """What `invoke test` does first, on the lab host it holds the lease of: rebuild what
    changed and push it (seconds when nothing did), so a test never runs against a plugin or
    Nomad other than this tree's."""
    steps = Steps("build and push", out)
    with steps.step("build"):
        build_all(config, out)
    with steps.step("push"):
        push(host, config, out)
    return steps


def build_all(config: LabConfig, out=print) -> None:
    build.build_nomad(config, log=out)
    build.build_plugin(config, log=out)
    build.build_apps(config, log=out)
    build.write_versions(config)


def provision(host: LabHost, config: LabConfig) -> dict:
    """Run the idempotent guest set-up; it checks cgroup v2, crun and Java and says why not."""
    script = (config.root / GUEST_SETUP).read_text()
    digest = hashlib.sha256(script.encode()).hexdigest()
    # Once per boot and script version: a warm lab.up only reads the recorded result.
    res = host.run_script("provision-once.sh", [digest, script], check=False, timeout=300)
    if not res.ok:
        raise LabError(f"the lab host {host.spec.url} is not fit for the lab:\n"
                       f"{(res.stdout + res.stderr).strip()}")
    last = (res.stdout.strip().splitlines() or ["{}"])[-1]
    try:
        return json.loads(last)
    except ValueError:
        return {"guest-setup": last}


def verify(host: LabHost, out=print, run_binaries: bool = True) -> None:
    """The binaries run on the lab host (after a push changed them; otherwise the manifest
    vouches for them) and nothing is left from an earlier run."""
    from lab.remote.layout import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR

    if run_binaries:
        res = host.run(f"{NOMAD_BIN} version | head -1; "
                       f"{PLUGIN_DIR}/{PLUGIN_BINARY} version 2>&1 | head -1")
        out(f"verify: {'; plugin: '.join(res.stdout.strip().splitlines())}")
    found = janitor.scan(host)
    if found:
        janitor.sweep(host)
        out(f"verify: swept leftovers of an earlier run: {sorted(found)}")
