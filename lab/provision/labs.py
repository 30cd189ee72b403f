"""A lab = Debian release x kernel x cgroup mode; each lab is its own named VM.

`LabSpec.from_config(config)` reads the lab a command acts on from the settings
(LAB_BOX_RELEASE, LAB_CGROUP, LAB_KERNEL or invoke.yaml). The default lab (bookworm, its own
kernel, cgroup v2) keeps the historical VM name `nomad-lab-<checkout hash>` and its state in
`.lab/`; any other lab is `nomad-lab-<checkout hash>-<lab id>` (e.g. `-bullseye`,
`-bookworm-v1`) with its Vagrant state in `.lab/labs/<lab id>/`, so several exist side by side.
A lab the lab cannot serve is refused by `check()` before anything is built or booted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.core.errors import LabError
from lab.provision import kernels

DEFAULT_RELEASE = "bookworm"
# What each release brings; the box's JRE per release is lab/provision/box.py JRE_BY_RELEASE.
RELEASES = {
    "bullseye": "Debian 11: kernel 5.10 (no cgroup.kill, no memory.peak), crun 0.17, Java 11",
    "bookworm": "Debian 12: kernel 6.1, crun 1.8.1, Java 17",
    "trixie": "Debian 13: kernel 6.12, crun 1.21, Java 21",
}
# Releases asked for by name that the lab refuses, and why.
REFUSED_RELEASES = {
    "buster": "Debian 10 has no crun package (crun entered Debian in bullseye)",
    "stretch": "Debian 9 has no crun package and no cgroup v2 support in its systemd",
    "jessie": "Debian 8 has no crun package and no cgroup v2",
    "forky": "testing moves daily: a box built from it is not reproducible; use trixie",
    "testing": "testing moves daily: a box built from it is not reproducible; use trixie",
    "sid": "unstable moves daily: a box built from it is not reproducible; use trixie",
    "unstable": "unstable moves daily: a box built from it is not reproducible; use trixie",
}
BASE_CMDLINE = "root=/dev/vda rw console=ttyS0"
CMDLINE_V2 = "systemd.unified_cgroup_hierarchy=1"
# Pure legacy, not hybrid: with unified_cgroup_hierarchy=0 alone systemd still mounts a cgroup2
# hierarchy at /sys/fs/cgroup/unified for itself (hybrid), which crun refuses.
CMDLINE_V1 = "systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1"
# Releases whose systemd cannot boot the pure legacy hierarchy (or only forced), and why.
NO_CGROUP_V1 = {
    "trixie": "trixie's systemd 257 deprecates cgroup v1: it boots legacy only with "
              "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1, untested here; use bookworm-v1 or "
              "bullseye-v1",
}


class LabRefused(LabError):
    """The lab asked for cannot be served here; the message says why and what works."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class LabSpec:
    release: str = DEFAULT_RELEASE
    cgroup: str = "v2"
    kernel: str = ""  # "" = the release's own kernel

    @classmethod
    def from_config(cls, config: object) -> LabSpec:
        return cls(str(getattr(config, "box_release", "") or DEFAULT_RELEASE),
                   str(getattr(config, "cgroup", "") or "v2"),
                   str(getattr(config, "kernel", "") or ""))

    @classmethod
    def parse(cls, text: str) -> LabSpec:
        """`bullseye`, `bookworm-v1`, `bookworm+bpo` (a kernel after '+'), `trixie-v2`."""
        base, _, kernel = text.strip().partition("+")
        release, cgroup = base, "v2"
        match = re.fullmatch(r"(.+)-(v[12])", base)
        if match:
            release, cgroup = match.groups()
        if not re.fullmatch(r"[a-z]+", release.lower()):
            raise LabRefused(f"lab {text!r} names no release: write e.g. bullseye, "
                             "bookworm-v1 or bookworm+bpo")
        return cls(release.lower(), cgroup, kernel)

    @property
    def id(self) -> str:
        """Short, file- and domain-name safe: bullseye, bookworm-v1, bookworm-k-bpo."""
        parts = [self.release]
        if self.kernel:  # a local build by its file's name, not its whole path
            local = self.kernel.startswith(("/", "./", "../", "~"))
            name = Path(self.kernel.split(",")[0]).name if local else self.kernel
            parts.append(("k-local-" if local else "k-") + _slug(name))
        if self.cgroup != "v2":
            parts.append(self.cgroup)
        return "-".join(parts)

    @property
    def is_default(self) -> bool:
        return self == LabSpec()

    def settings(self) -> dict[str, str]:
        """The environment that selects this lab for `./invoke lab.up`/`test` and pytest."""
        return {"LAB_BOX_RELEASE": self.release, "LAB_CGROUP": self.cgroup,
                "LAB_KERNEL": self.kernel}

    def cmdline(self) -> str:
        return f"{BASE_CMDLINE} {CMDLINE_V1 if self.cgroup == 'v1' else CMDLINE_V2}"

    def refusal(self) -> str:
        """Why this lab cannot be served here, or ''."""
        if self.release in REFUSED_RELEASES:
            return f"release {self.release!r} is refused: {REFUSED_RELEASES[self.release]}"
        if self.release not in RELEASES:
            known = ", ".join(RELEASES)
            return (f"release {self.release!r} is unknown to the lab (it serves {known}): add "
                    "it to lab/provision/labs.py RELEASES and its JRE to "
                    "lab/provision/box.py JRE_BY_RELEASE, then prove it with the suite")
        if self.cgroup not in ("v1", "v2"):
            return f"cgroup mode {self.cgroup!r} is not v1 or v2"
        if self.cgroup == "v1" and self.release in NO_CGROUP_V1:
            return f"cgroup v1 on {self.release} is refused: {NO_CGROUP_V1[self.release]}"
        if self.kernel:
            return kernels.refusal(self.kernel)
        return ""

    def check(self) -> LabSpec:
        why = self.refusal()
        if why:
            raise LabRefused(f"lab {self.id} cannot be served: {why}")
        return self

    def describe(self) -> str:
        kernel = f"kernel {self.kernel}" if self.kernel else "its own kernel"
        return f"{self.release} ({kernel}, cgroup {self.cgroup})"


def vm_name(base: str, spec: LabSpec) -> str:
    """The default lab keeps `base` (the running VM of a checkout is not recreated)."""
    return base if spec.is_default else f"{base}-{spec.id}"


def state_dir(base: Path, spec: LabSpec) -> Path:
    return base if spec.is_default else base / "labs" / spec.id


DEFAULT_MATRIX = ("bullseye", "bookworm", "bookworm+bpo", "trixie", "bookworm-v1")
