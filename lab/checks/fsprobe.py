"""Reading the fsprobe test app's report (tests/apps/fsprobe): "key: value" lines."""

from __future__ import annotations


def report(stdout: str) -> dict[str, list[str]]:
    """fsprobe's "key: value" lines; a key may repeat (cgroup), so each maps to a list."""
    __tracebackhide__ = True
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            found.setdefault(key, []).append(value)
    assert "fsprobe done" in stdout, f"fsprobe did not finish; its output:\n{stdout}"
    return found


def one(found: dict[str, list[str]], key: str) -> str:
    """The single value of `key`; fails naming what fsprobe reported instead."""
    __tracebackhide__ = True
    values = found.get(key)
    assert values and len(values) == 1, f"fsprobe reported {key!r} as {values}"
    return values[0]
