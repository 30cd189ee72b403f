"""`lab.up`: everything from a bare control host to a verified lab host, step by step.

Steps: host (packages, libvirtd), build (plugin, Nomad, test JARs), box, vm, check (the guest
set-up, the pushed files and the leftover scan, in one round trip), push, verify. Each is
idempotent, so a second run on a healthy lab only checks and is fast. For an ssh:// target the
host/box/vm steps are skipped: the rest is the same code path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass

from lab.checks import janitor
from lab.core.config import LabConfig
from lab.core.errors import LabError
from lab.core.steps import Steps
from lab.provision import build, target
from lab.provision.push import push
from lab.remote.host import CommandResult, LabHost, script_command

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
                if machine.answers():
                    host = lease.enter_context(target.leased(config, "invoke lab.up", out))
                machine.up()
                if host is not None and not machine.kept_running:
                    lease.close()
                    host = None
        if host is None:
            host = lease.enter_context(target.leased(config, "invoke lab.up", out))
        _check_push_verify(host, config, steps, out)
    out(steps.summary())
    return steps


def _check_push_verify(host: LabHost, config: LabConfig, steps: Steps, out) -> None:
    with steps.step("check"):
        checked = check(host, config)
        out("provision: " + json.dumps(checked.provision))
    with steps.step("push"):
        changed = push(host, config, out, read=checked.files)
    with steps.step("verify"):
        verify(host, checked.leftovers, out, run_binaries=bool(changed))


def after_restart(host: LabHost, config: LabConfig, out=print) -> Steps:
    """A lab host restarted under a run (lab/pytest_plugin/guest.py), whose lease that run
    holds again: what lab.up's check, push and verify do, so it is as lab.up leaves it (the set-up
    of the new boot, the files a hard power-off may have cost, no leftovers)."""
    steps = Steps("lab restart", out)
    _check_push_verify(host, config, steps, out)
    out(steps.summary())
    return steps


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
    build.write_versions_if_stale(config)


@dataclass
class Checked:
    provision: dict  # the guest set-up's result: kernel, cgroup, crun, java, ...
    files: tuple[dict[str, str], list[str]]  # lab.provision.push.parse_sums of the lab host
    leftovers: dict[str, list[str]]  # lab.checks.janitor.parse_scan


def check(host: LabHost, config: LabConfig) -> Checked:
    """The lab host's state in one SSH round trip, its parts at once: the guest set-up (run
    once per boot and script version, so on a warm lab only its recorded result), the pushed
    files' manifest, and the leftover scan."""
    from lab.provision import push as push_mod
    from lab.remote import batch

    results = batch.run_together(host, {
        "provision": provision_command(config),
        "files": push_mod.sums_command(push_mod.remote_paths(config)),
        "leftovers": janitor.scan_script(),
    }, timeout=config.timeout("provision"))
    return Checked(provision_result(host, results["provision"]),
                   push_mod.parse_sums(results["files"].stdout),
                   janitor.parse_scan(results["leftovers"].stdout))


def provision_command(config: LabConfig) -> str:
    """The idempotent guest set-up (provision/guest-setup.sh through provision-once.sh): it
    checks cgroup v2, crun and Java and says why not."""
    script = (config.root / GUEST_SETUP).read_text()
    digest = hashlib.sha256(script.encode()).hexdigest()
    # Once per boot and script version: a warm lab.up only reads the recorded result.
    return script_command("provision-once.sh", [digest, script])


def provision_result(host: LabHost, res: CommandResult) -> dict:
    """provision-once.sh's answer: its stdout carries the set-up's stdout and stderr (the
    batch's own stderr is shared with the other checks, so it is left out)."""
    if not res.ok:
        raise LabError(f"the lab host {host.spec.url} is not fit for the lab:\n"
                       f"{res.stdout.strip() or f'(no output; exit {res.rc})'}")
    last = (res.stdout.strip().splitlines() or ["{}"])[-1]
    try:
        return json.loads(last)
    except ValueError:
        return {"guest-setup": last}


def verify(host: LabHost, found: dict[str, list[str]], out=print,
           run_binaries: bool = True) -> None:
    """The binaries run on the lab host (after a push changed them; otherwise the manifest
    vouches for them) and nothing is left from an earlier run (`found`: check()'s scan)."""
    from lab.remote.layout import NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR

    if run_binaries:
        res = host.run(f"{NOMAD_BIN} version | head -1; "
                       f"{PLUGIN_DIR}/{PLUGIN_BINARY} version 2>&1 | head -1")
        out(f"verify: {'; plugin: '.join(res.stdout.strip().splitlines())}")
    if found:
        janitor.sweep(host)
        out(f"verify: swept leftovers of an earlier run: {sorted(found)}")
