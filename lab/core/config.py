"""One LabConfig from invoke.yaml, the environment (LAB_*) and explicit overrides.

Precedence, lowest first: defaults below, invoke.yaml's `lab:` section, LAB_* environment
variables, then overrides passed by the caller (Invoke flags, pytest options).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from lab.core.errors import LabError

ROOT = Path(__file__).resolve().parents[2]

# Under TCG a JVM starts ~10x slower than natively; agents and jobs ~3-5x.
TCG_TIMEOUT_SCALE = 4.0

DEFAULT_TIMEOUTS = {
    "ssh": 30.0,
    "command": 120.0,
    "vm_up": 900.0,
    # lab.up's checks, with the guest set-up on a fresh boot (~7 s under TCG).
    "provision": 150.0,
    # One phase of the box build (debootstrap is the longest: ~5 min here); host-side work.
    "box_phase": 1800.0,
    "agent_ready": 60.0,
    "agent_stop": 30.0,
    "job": 90.0,
    "event": 60.0,
    "fingerprint": 45.0,
    # Waiting for another run's lease on the lab host (lab.remote.lease).
    "lease": 300.0,
    # The lab host answered no SSH keepalive for this long: it is lost (hung); the VM is
    # restarted (lab/checks/guest_watch.py). A panic is seen on the serial console at once.
    "guest_silent": 10.0,
}


def default_cache_dir() -> Path:
    """Shared across checkouts, so a fresh clone (CI) reuses the box and the SSH key."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nomad-lab"


@dataclass
class LabConfig:
    root: Path = ROOT
    target: str = "vagrant"
    # Several lab hosts for one run (`LAB_TARGETS=vagrant,ssh://root@h2`, or --lab-target more
    # than once): each xdist worker is bound to one of them (for_worker); "" = just `target`.
    targets: str = ""
    ssh_key: str = ""
    box_release: str = "bookworm"
    # The lab = release x kernel x cgroup mode (lab/provision/labs.py); each is its own VM.
    cgroup: str = "v2"      # v2 (unified) or v1 (pure legacy hierarchy)
    kernel: str = ""        # "" = the release's own kernel
    cpus: int = 2
    memory_mb: int = 4096
    accel: str = "auto"
    timeout_scale: str | float = "auto"
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    keep: bool = False
    # Start each test's agent while the test before it runs (lab/nomad/agent_pool.py).
    agents_ahead: bool = True
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    # -- derived paths -------------------------------------------------------------------
    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def state_dir(self) -> Path:
        """Per-checkout state: Vagrant's dot dir, the VM's SSH port, the accel decision."""
        return self.root / ".lab"

    @property
    def cache_dir(self) -> Path:
        return default_cache_dir()

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def is_vagrant(self) -> bool:
        return self.target == "vagrant"

    # -- timeouts ------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        if self.timeout_scale != "auto":
            return float(self.timeout_scale)
        if not self.is_vagrant:
            return 1.0
        return TCG_TIMEOUT_SCALE if self.effective_accel() == "tcg" else 1.0

    def effective_accel(self) -> str:
        """The accel the VM runs with: the configured one, else the cached detection."""
        if self.accel in ("kvm", "tcg"):
            return self.accel
        try:
            return json.loads((self.state_dir / "accel.json").read_text())["accel"]
        except (OSError, ValueError, KeyError):
            return "tcg"  # unknown yet: assume the slow case rather than time out spuriously

    def timeout(self, name: str) -> float:
        if name not in self.timeouts:
            raise LabError(f"unknown timeout {name!r}: known ones are {sorted(self.timeouts)}")
        return float(self.timeouts[name]) * self.scale

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, overrides: dict | None = None, env: dict | None = None,
             yaml_path: Path | None = None) -> LabConfig:
        env = os.environ if env is None else env
        values: dict = {}
        path = yaml_path or ROOT / "invoke.yaml"
        if path.exists():
            values.update((yaml.safe_load(path.read_text()) or {}).get("lab", {}) or {})
        names = {f.name: f for f in fields(cls)}
        for name in names:
            key = f"LAB_{name.upper()}"
            if key in env:
                values[name] = env[key]
        for key, value in env.items():
            if key.startswith("LAB_TIMEOUT_") and key != "LAB_TIMEOUT_SCALE":
                values.setdefault("timeouts", {})
                values["timeouts"] = {**values["timeouts"], key[12:].lower(): value}
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        unknown = set(values) - set(names)
        if unknown:
            raise LabError(f"unknown lab setting(s) {sorted(unknown)} in {path} or LAB_* "
                           f"environment: valid ones are {sorted(names)}")
        config = cls(**{k: v for k, v in values.items() if k != "timeouts"})
        config.timeouts = {**DEFAULT_TIMEOUTS, **{
            k: _number(f"timeout {k}", v, float, f"LAB_TIMEOUT_{k.upper()}=120")
            for k, v in (values.get("timeouts") or {}).items()}}
        return config._validated()

    def _validated(self) -> LabConfig:
        listed = [t.strip() for t in str(self.targets or "").split(",") if t.strip()]
        if len(set(listed)) != len(listed):
            raise LabError(f"targets {self.targets!r} name one lab host twice: list each once")
        if listed:
            self.target = listed[0]
        self.targets = ",".join(listed)
        for target in listed or [self.target]:
            if not (target == "vagrant" or target.startswith("ssh://")):
                raise LabError(f"target {target!r} is not understood: use 'vagrant' or "
                               "ssh://user@host[:port] (e.g. LAB_TARGET=ssh://root@127.0.0.1:2222)")
        if self.cgroup not in ("v1", "v2"):
            raise LabError(f"cgroup {self.cgroup!r} is not understood: use v2 (unified) or v1 "
                           "(pure legacy), e.g. LAB_CGROUP=v1")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise LabError(f"accel {self.accel!r} is not one of auto, kvm, tcg")
        if self.timeout_scale != "auto":
            try:
                scale = float(self.timeout_scale)
            except ValueError:
                scale = 0.0
            if scale <= 0:
                raise LabError(f"timeout_scale {self.timeout_scale!r} must be 'auto' or a "
                               "positive number, e.g. LAB_TIMEOUT_SCALE=2")
            self.timeout_scale = scale
        self.root = Path(self.root)  # LAB_ROOT arrives as a string
        self.cpus = _number("cpus", self.cpus, int, "LAB_CPUS=2")
        self.memory_mb = _number("memory_mb", self.memory_mb, int, "LAB_MEMORY_MB=4096")
        if isinstance(self.keep, str):
            self.keep = self.keep.lower() in ("1", "true", "yes")
        if isinstance(self.agents_ahead, str):
            self.agents_ahead = self.agents_ahead.lower() in ("1", "true", "yes")
        return self

    def with_overrides(self, **changes) -> LabConfig:
        return replace(self, **changes)._validated()

    @property
    def target_list(self) -> list[str]:
        """The run's lab hosts: `targets`, or the one `target`."""
        return self.targets.split(",") if self.targets else [self.target]

    def for_target(self, target: str) -> LabConfig:
        """This run's settings on one of its lab hosts (the same run id)."""
        return self.with_overrides(target=target, targets="")

    def for_worker(self, worker: str | None) -> LabConfig:
        """xdist worker gwN's lab host: the run's hosts in turn (gw0 the first, gw1 the
        second, ...), so each host gets its share of the workers."""
        if not worker or len(self.target_list) < 2:
            return self
        number = worker.removeprefix("gw")
        index = int(number) if number.isdigit() else 0
        return self.for_target(self.target_list[index % len(self.target_list)])


def _number(name: str, value, kind, example: str):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise LabError(f"{name} {value!r} is not a number: e.g. {example}") from None
