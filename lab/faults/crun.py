"""crun faults: crun is missing, or a wrapper fails chosen subcommands the way crun does.
Shell: scripts/crun.sh, scripts/crun-wrapper.sh and scripts/moved-aside.sh."""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Sequence

from lab.faults import files
from lab.faults.framework import SCRIPTS, FaultError, Host, Plan, call, probe
from lab.faults.registry import Marker, fault

SCRIPT = "crun.sh"
WRAPPER = "crun-wrapper.sh"
SETTINGS_END = "# end of settings\n"

# A wrapper written next to crun (<path>.lab-wrapper) but not renamed over it yet.
STAGED_WRAPPER = Marker("staged-wrapper", SCRIPT, scope="roots")


def _present(host: Host, path: str, what: str) -> None:
    probe(host, what, call(SCRIPT, "present", path), files.refuse_if_unhealed([path]))


@fault(files.MOVED_ASIDE)
def crun_missing(host: Host, path: str = "/usr/bin/crun") -> Plan:
    """Move crun aside (<path>.lab-hidden). details: path, observed (another crun on PATH, if
    any: the driver would find that one)."""
    _present(host, path, "hiding crun")
    return Plan({"path": path}, inject=[files.hide([path])], heal=[files.restore([path])],
                check=[call(SCRIPT, "gone", path)], healed=[files.restored([path])])


def crun_wrapper(real: str, message: str, on: Sequence[str], token: str = "") -> str:
    """scripts/crun-wrapper.sh with its settings filled in: for the subcommands in `on` it
    fails like crun does (a JSON error line in the --log file, the message on stderr, exit 1);
    anything else execs the real crun at `real`."""
    template = (SCRIPTS / WRAPPER).read_text()
    head, _, body = template.partition(SETTINGS_END)
    head = head[: head.index("\nreal=") + 1]
    settings = [f"# fault token: {token}", f"real={shlex.quote(real)}",
                f"msg={shlex.quote(message)}", f"msg_json={shlex.quote(json.dumps(message))}",
                f"on={shlex.quote(' '.join(on))}"]
    return head + "\n".join(settings) + "\n" + SETTINGS_END + body


@fault(files.MOVED_ASIDE, STAGED_WRAPPER)
def crun_failing(host: Host, message: str = "lab fault: crun_failing injected this error",
                 on: Sequence[str] = ("run", "create"), path: str = "/usr/bin/crun") -> Plan:
    """Replace crun by a wrapper that fails the `on` subcommands with `message` (as crun's
    JSON log line and on stderr) and passes everything else (--version, kill, delete...) to
    the real crun. `path` is never missing: the real binary is hard-linked aside and the
    wrapper renamed over it atomically; the heal renames it back.

    details: path, real (the hidden crun), message, on, observed (the probe's log line).
    """
    if not on or not all(re.fullmatch(r"[a-z][a-z-]*", sub) for sub in on):
        raise FaultError(f"crun_failing: on={on!r} must name crun subcommands, e.g. "
                         "('run', 'create')")
    _present(host, path, "wrapping crun")
    hidden, token = path + files.HIDDEN, secrets.token_hex(4)
    return Plan(
        {"path": path, "real": hidden, "message": message, "on": list(on)},
        inject=[call(SCRIPT, "wrap", path, hidden, crun_wrapper(hidden, message, on, token))],
        heal=[files.restore([path]), call(SCRIPT, "unstage", path)],
        check=[call(SCRIPT, "probe", path, f"/tmp/.lab-crun-probe-{token}.log", on[0])],
        healed=[files.restored([path]), call(SCRIPT, "unstaged", path)],
    )
