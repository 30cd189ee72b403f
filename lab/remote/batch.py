"""Several independent commands on the lab host in one SSH round trip, run at the same time.

Under TCG a round trip with sudo costs ~0.6 s and every process start ~0.1 s, so checks that
do not depend on each other (the guest set-up's record, the pushed files' manifest, the
leftover scan, the faults' scan) go together: each section runs in a process substitution
(a fork, no extra program started), all at once, and their outputs come back in order, each
ended by a marker line with its exit code. The sections' stderr is shared (diagnostics only).
"""

from __future__ import annotations

import secrets

from lab.core.errors import LabError
from lab.remote.host import CommandResult, LabHost


def script(sections: dict[str, str], marker: str) -> str:
    """The bash that runs every section at once and prints each one's stdout, then
    `<marker> <rc>`, in the order given."""
    lines = []
    for index, code in enumerate(sections.values()):
        # A function first: bash before 5.2 (bullseye's 5.1) cannot parse a `case` inside
        # <( ... ), but parses it in a function body. The subshell keeps a section's `exit`
        # or `set -e` its own.
        lines.append(f"__lab_section_{index}() {{ (\n{code}\n); }}")
    for index in range(len(sections)):
        lines.append(f"exec {3 + index}< <(__lab_section_{index}; "
                     f"printf '\\n%s %d\\n' {marker} $?)")
    # `read -d ''` reads to the end of the pipe without starting cat.
    for index in range(len(sections)):
        lines.append(f"IFS= read -r -d '' out <&{3 + index}; printf '%s' \"$out\"")
    return "\n".join(lines) + "\n"


def parse(names: list[str], stdout: str, marker: str) -> dict[str, tuple[int, str]]:
    """{name: (rc, stdout)} from script()'s output; a section without its marker line (the
    batch was cut short) is missing."""
    results: dict[str, tuple[int, str]] = {}
    rest = stdout
    for name in names:
        head, found, tail = rest.partition(f"\n{marker} ")
        if not found:
            break
        code, _, rest = tail.partition("\n")
        results[name] = (int(code), head)
    return results


def run_together(host: LabHost, sections: dict[str, str], *, sudo: bool = True,
                 timeout: float | None = None) -> dict[str, CommandResult]:
    """Run each section's bash at once on the lab host, in one round trip; return each one's
    result (rc, stdout; stderr is the batch's, shared)."""
    if len(sections) > 7:  # file descriptors 3-9: bash's single-digit redirections
        raise ValueError(f"run_together takes at most 7 sections, not {len(sections)}")
    marker = f"__lab_section_end_{secrets.token_hex(6)}__"
    res = host.run(script(sections, marker), sudo=sudo, check=False, timeout=timeout)
    results = parse(list(sections), res.stdout, marker)
    missing = [name for name in sections if name not in results]
    if missing:
        raise LabError(f"the lab host {host.spec.url} cut short the batch of checks "
                       f"({', '.join(sections)}): no result for {', '.join(missing)} "
                       f"(exit {res.rc}; stderr: {res.stderr.strip()[-500:] or 'empty'}); "
                       "fix: run `./invoke lab.status`, then retry")
    return {name: CommandResult(code, rc, out, res.stderr)
            for (name, code), (rc, out) in zip(sections.items(), results.values(), strict=True)}
