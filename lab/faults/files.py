"""Files a fault moves aside: renamed to <file>.lab-hidden, and put back by the heal
(scripts/moved-aside.sh). The Java and crun faults share these steps and their marker."""

from __future__ import annotations

from collections.abc import Sequence

from lab.faults.framework import Step, call
from lab.faults.registry import Marker

HIDDEN = ".lab-hidden"  # suffix of files moved aside (moved-aside.sh: hidden=)
WRAPPER_MARK = "LAB_FAULT_WRAPPER"  # inside every wrapper a fault installs (wrapper_mark=)
SCRIPT = "moved-aside.sh"

MOVED_ASIDE = Marker("moved-aside", SCRIPT, scope="roots")


def hide(paths: Sequence[str]) -> Step:
    return call(SCRIPT, "hide", *paths)


def restore(paths: Sequence[str]) -> Step:
    """Idempotent: a lab wrapper at the path is replaced; a real file there (reinstalled
    meanwhile) wins and the hidden copy is dropped."""
    return call(SCRIPT, "restore", *paths)


def restored(paths: Sequence[str]) -> Step:
    return call(SCRIPT, "restored", *paths)


def refuse_if_unhealed(paths: Sequence[str]) -> Step:
    return call(SCRIPT, "refuse", *paths)


def refuse_if_hidden_under(directory: str, name: str) -> Step:
    return call(SCRIPT, "refuse-under", directory, name)
