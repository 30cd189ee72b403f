"""A sandbox lab host for the fault tests: the fault scripts really run (local bash), on files
in a temporary directory, with tc, iptables, modprobe, dmsetup and dd replaced by stubs that
keep their state in JSON. No VM, nothing outside the sandbox's root is touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lab import faults
from lab.core.errors import CommandFailed
from lab.faults import framework
from lab.remote.host import CommandResult

TC_STUB = r'''
import json, os, sys
state_file = os.path.join(os.environ["FAKE_STATE"], "tc.json")
st = json.load(open(state_file)) if os.path.exists(state_file) else {"qdiscs": [], "filters": []}
a = sys.argv[1:]
def save(): json.dump(st, open(state_file, "w"))
def fail(msg, rc=2): print(msg, file=sys.stderr); sys.exit(rc)
fail_on = os.environ.get("FAKE_TC_FAIL")
if fail_on and fail_on in " ".join(a): fail("RTNETLINK answers: Invalid argument")
if a[:2] == ["qdisc", "add"]:
    dev = a[a.index("dev") + 1]; handle = a[a.index("handle") + 1]
    if "root" in a:
        if any(q["dev"] == dev and q["parent"] == "root" for q in st["qdiscs"]):
            fail("Error: Exclusivity flag on, cannot modify.")
        parent, rest = "root", a[a.index("handle") + 2:]
    else:
        parent, rest = a[a.index("parent") + 1], a[a.index("handle") + 2:]
    st["qdiscs"].append({"dev": dev, "handle": handle, "parent": parent, "kind": rest[0],
                         "args": " ".join(rest[1:])}); save()
elif a[:2] == ["filter", "add"]:
    st["filters"].append(" ".join(a[2:])); save()
elif a[:2] == ["qdisc", "del"]:
    dev = a[a.index("dev") + 1]
    if not any(q["dev"] == dev for q in st["qdiscs"]):
        fail("Error: Cannot delete qdisc with handle of zero.")
    st["qdiscs"] = [q for q in st["qdiscs"] if q["dev"] != dev]
    st["filters"] = [f for f in st["filters"] if f"dev {dev} " not in f + " "]; save()
elif a[:2] == ["qdisc", "show"]:
    only = a[a.index("dev") + 1] if "dev" in a else None
    qs = st["qdiscs"] or [{"dev": "lo", "handle": "0:", "parent": "root", "kind": "noqueue",
                            "args": ""}]
    for q in qs:
        if only and q["dev"] != only: continue
        where = "root refcnt 2" if q["parent"] == "root" else "parent " + q["parent"]
        dev = "" if only else "dev " + q["dev"] + " "
        print(f"qdisc {q['kind']} {q['handle']} {dev}{where} {q['args']}".rstrip())
else:
    fail("tc stub: unsupported " + " ".join(a))
'''

IPTABLES_STUB = r'''
import json, os, sys
state_file = os.path.join(os.environ["FAKE_STATE"], "iptables.json")
rules = json.load(open(state_file)) if os.path.exists(state_file) else []
a = [x for x in sys.argv[1:] if x != "-w"]
def save(): json.dump(rules, open(state_file, "w"))
op, rest = a[0], a[1:]
if op == "-S":
    print("-P INPUT ACCEPT")
    for chain, spec in rules:
        if not rest or rest[0] == chain: print(f"-A {chain} {spec}")
elif op in ("-I", "-A"):
    rules.insert(0, [rest[0], " ".join(rest[1:])]) if op == "-I" else rules.append(
        [rest[0], " ".join(rest[1:])]); save()
elif op in ("-C", "-D"):
    want = [rest[0], " ".join(rest[1:])]
    if want not in rules:
        print("iptables: Bad rule (does a matching rule exist in that chain?).", file=sys.stderr)
        sys.exit(1)
    if op == "-D": rules.remove(want); save()
else:
    print("iptables stub: unsupported " + " ".join(a), file=sys.stderr); sys.exit(2)
'''

MODPROBE_STUB = r'''
import os, sys
if sys.argv[1] in os.environ.get("FAKE_MISSING_MODULES", "").split(","):
    print(f"modprobe: FATAL: Module {sys.argv[1]} not found in directory /lib/modules/6.1.0",
          file=sys.stderr)
    sys.exit(1)
'''

DMSETUP_STUB = r'''
import json, os, sys
state_file = os.path.join(os.environ["FAKE_STATE"], "dm.json")
devs = json.load(open(state_file)) if os.path.exists(state_file) else {}
a = sys.argv[1:]
def save(): json.dump(devs, open(state_file, "w"))
def missing(name): print(f"Device {name} not found", file=sys.stderr); sys.exit(1)
if a[0] == "create": devs[a[1]] = {"suspended": False, "open": 0}; save()
elif a[0] in ("suspend", "resume"):
    if a[1] not in devs: missing(a[1])
    devs[a[1]]["suspended"] = a[0] == "suspend"
    if a[0] == "resume": devs[a[1]]["open"] = 0  # the blocked read completes and closes
    save()
elif a[0] == "remove":
    name = a[-1]
    if name not in devs: missing(name)
    del devs[name]; save()
elif a[0] == "ls":
    print("\n".join(f"{n}\t(254:{i})" for i, n in enumerate(devs)) or "No devices found")
elif a[0] == "info":
    name = a[-1]
    if name not in devs: missing(name)
    d = devs[name]
    print(f"L-{'s' if d['suspended'] else '-'}w:{d['open']}" if "-c" in a
          else f"Name: {name}\nState: {'SUSPENDED' if d['suspended'] else 'ACTIVE'}")
elif a[0] == "_open": devs[a[1]]["open"] += 1; save()  # the dd stub's open
else: print("dmsetup stub: unsupported " + " ".join(a), file=sys.stderr); sys.exit(2)
'''

# A writer that opens the device and would block: it only counts itself as an opener.
DD_STUB = """#!/bin/sh
for arg; do case $arg in of=/dev/mapper/*) dev=${arg#of=/dev/mapper/} ;; esac; done
exec dmsetup _open "$dev"
"""

JAVA = """#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
if [ ! -e "$here/../lib/libjli.so" ]; then
  echo "$0: error while loading shared libraries: libjli.so: cannot open shared object file" >&2
  exit 127
fi
echo 'openjdk version "17.0.99" 2099-01-01' >&2
"""

REAL_CRUN = """#!/bin/sh
echo "real crun $*" >> "$(dirname "$0")/../../crun-calls.log"
[ "$1" = --version ] && echo "crun version 1.8.1"
exit 0
"""


class SandboxHost:
    """A LabHost stand-in: records every command and runs it with local bash."""

    name = "sandbox"

    def __init__(self, root: Path):
        self.root, self.commands = root, []
        self.ssh_down_for: list[str] = []  # substrings: the next matching run raises rc=None
        stubs = root / "stubs"
        stubs.mkdir()
        for name, code in (("tc", TC_STUB), ("iptables", IPTABLES_STUB),
                           ("modprobe", MODPROBE_STUB), ("dmsetup", DMSETUP_STUB)):
            (stubs / name).write_text(f"#!{sys.executable}\n{code}")
            (stubs / name).chmod(0o755)
        (stubs / "dd").write_text(DD_STUB)
        (stubs / "dd").chmod(0o755)
        proc_sys = root / "proc-sys" / "kernel"  # the hung-task fault's sysctls
        proc_sys.mkdir(parents=True)
        (proc_sys / "hung_task_timeout_secs").write_text("120\n")
        (proc_sys / "hung_task_warnings").write_text("10\n")
        (root / "fakestate").mkdir()
        self.env = {"PATH": f"{stubs}:{root}/bin:/usr/bin:/bin", "FAKE_STATE":
                    str(root / "fakestate"), "LC_ALL": "C",
                    "LAB_PROC_SYS": str(root / "proc-sys")}

    def run(self, cmd, *, check=True, timeout=None, sudo=False, hint=""):
        self.commands.append(cmd)
        for marker in list(self.ssh_down_for):
            if marker in cmd:
                self.ssh_down_for.remove(marker)
                raise CommandFailed(self.name, cmd, None, "SSH failed: connection reset")
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                              env=self.env, timeout=30)
        res = CommandResult(cmd, proc.returncode, proc.stdout, proc.stderr)
        if check and not res.ok:
            raise CommandFailed(self.name, cmd, res.rc, res.stderr, res.stdout, hint)
        return res

    def sudo(self, cmd, **kwargs):
        return self.run(cmd, sudo=True, **kwargs)

    def tc(self):
        path = self.root / "fakestate" / "tc.json"
        return json.loads(path.read_text()) if path.exists() else {"qdiscs": [], "filters": []}

    def iptables(self):
        path = self.root / "fakestate" / "iptables.json"
        return json.loads(path.read_text()) if path.exists() else []


def make_sandbox(root: Path, monkeypatch) -> SandboxHost:
    """A SandboxHost over `root` with a JRE (root/jvm, `java` on PATH through root/bin) and a
    crun (root/usr/bin/crun); heal scripts go to root/var-lib-lab-faults."""
    monkeypatch.setattr(framework, "STATE_DIR", str(root / "var-lib-lab-faults"))
    monkeypatch.setattr(framework, "HEAL_TIMEOUT", 5.0)
    jvm = root / "jvm"
    (jvm / "bin").mkdir(parents=True)
    (jvm / "lib").mkdir()
    (jvm / "bin" / "java").write_text(JAVA)
    (jvm / "bin" / "java").chmod(0o755)
    (jvm / "lib" / "libjli.so").write_bytes(b"\x7fELF fake")
    (root / "bin").mkdir()
    (root / "bin" / "java").symlink_to(jvm / "bin" / "java")
    crun = root / "usr" / "bin" / "crun"
    crun.parent.mkdir(parents=True)
    crun.write_text(REAL_CRUN)
    crun.chmod(0o755)
    return SandboxHost(root)


def leftovers(host: SandboxHost, registry=faults.REGISTRY) -> list[str]:
    return registry.scan(host, roots=[str(host.root)])


def heal_scripts() -> list[str]:
    state = Path(framework.STATE_DIR)
    return sorted(p.name for p in state.glob("*.sh")) if state.exists() else []
