"""Java faults: the JRE the driver finds is broken (a library hidden, the binary hidden, its
execute bit removed). Shell: scripts/java.sh and scripts/moved-aside.sh."""

from __future__ import annotations

import re

from lab.faults import files
from lab.faults.framework import FaultError, Host, Plan, Step, call, probe
from lab.faults.registry import Marker, fault

SCRIPT = "java.sh"

# A .../bin/java under the sweep roots that has no execute bit: sweep gives it 0755 back.
NOT_EXECUTABLE = Marker("not-executable", SCRIPT, scope="roots")


def locate(host: Host, java: str, java_home: str | None) -> tuple[str, str]:
    """(java_home, real java binary) as the driver finds them: java_home if configured, else
    `java` on PATH with its symlinks resolved."""
    if java_home:
        home = java_home.rstrip("/")
        return home, f"{home}/bin/java"
    real = probe(host, "locating the JRE", call(SCRIPT, "locate", java)).strip().splitlines()[-1]
    return real[: -len("/bin/java")], real


def fails(java_bin: str) -> Step:
    """Check: exit 0 iff `java -version` fails; prints its complaint (first line)."""
    return call(SCRIPT, "fails", java_bin)


@fault(files.MOVED_ASIDE)
def java_library_missing(host: Host, lib: str = "libjli.so", *, java: str = "java",
                         java_home: str | None = None) -> Plan:
    """Hide a shared library of the JRE (renamed to <file>.lab-hidden): `java` fails to load.

    details: lib, path (the first match; paths lists all), java_home, observed (java's error).
    """
    home, java_bin = locate(host, java, java_home)
    paths = probe(host, f"hiding {lib}", files.refuse_if_hidden_under(home, lib),
                  call(SCRIPT, "libs", home, lib)).split()
    return Plan({"lib": lib, "path": paths[0], "paths": paths, "java_home": home},
                inject=[files.hide(paths)], heal=[files.restore(paths)],
                check=[fails(java_bin)], healed=[files.restored(paths)])


@fault(files.MOVED_ASIDE)
def java_missing(host: Host, *, java: str = "java", java_home: str | None = None) -> Plan:
    """Move the real `java` binary aside: `command -v java` and <java_home>/bin/java fail.

    details: path, java_home, observed (`command -v java` output: empty).
    """
    home, java_bin = locate(host, java, java_home)
    probe(host, "hiding java", call(SCRIPT, "present", java_bin),
          files.refuse_if_unhealed([java_bin]))
    return Plan({"path": java_bin, "java_home": home},
                inject=[files.hide([java_bin])], heal=[files.restore([java_bin])],
                check=[call(SCRIPT, "gone", java_bin, java)],
                healed=[files.restored([java_bin])])


@fault(NOT_EXECUTABLE)
def java_not_executable(host: Host, *, java: str = "java",
                        java_home: str | None = None) -> Plan:
    """chmod a-x the real `java` binary (even root cannot exec it); heal restores the mode.

    details: path, mode (the original, octal), observed (java's error).
    """
    home, java_bin = locate(host, java, java_home)
    mode = probe(host, "making java non-executable", call(SCRIPT, "mode", java_bin)).strip()
    if not re.fullmatch(r"[0-7]{3,4}", mode):
        raise FaultError(f"java_not_executable: unexpected mode {mode!r} of {java_bin}")
    if not int(mode, 8) & 0o111:
        raise FaultError(f"java_not_executable: {java_bin} already has mode {mode} (no x bit):"
                         " a previous fault was not healed? run `./invoke lab.clean`")
    return Plan({"path": java_bin, "java_home": home, "mode": mode},
                inject=[call(SCRIPT, "noexec", java_bin)],
                heal=[call(SCRIPT, "setmode", mode, java_bin)],
                check=[fails(java_bin)], healed=[call(SCRIPT, "hasmode", mode, java_bin)])
