"""The environment a run used, recorded in every report: box, kernel, cgroups, crun, Java, Nomad."""

from __future__ import annotations

import json

from lab.remote.host import LabHost
from lab.remote.layout import MANIFEST, NOMAD_BIN, PLUGIN_BINARY, PLUGIN_DIR

# The version lines run a JVM and two large Go binaries (seconds under TCG): they are cached
# on the lab host, keyed by what they depend on (the pushed files' manifest, the java and crun
# binaries, the boot), and recomputed when any of it changes.
FACTS_SCRIPT = rf"""
echo "kernel=$(uname -r)"
# The build string and the boot line tell two builds of one kernel release apart, and show
# the switches (cgroup mode, mitigations) a kernel- or cgroup-level bug may hinge on.
echo "kernel_build=$(uname -v)"
echo "kernel_cmdline=$(cat /proc/cmdline)"
echo "cgroup_mode=$(stat -fc %T /sys/fs/cgroup | sed 's/cgroup2fs/v2/;s/tmpfs/v1-or-hybrid/')"
echo "cgroup_controllers=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
java=$(readlink -f "$(command -v java)"); crun=$(command -v crun)
key=$({{ cat {MANIFEST} /proc/sys/kernel/random/boot_id; stat -c "%n %Y" "$java" "$crun"; }} \
  2>/dev/null | sha256sum | cut -c1-16)
cache=/var/cache/nomad-lab-facts/$key
if [ ! -s "$cache" ]; then
  mkdir -p /var/cache/nomad-lab-facts && rm -f /var/cache/nomad-lab-facts/*
  {{
    echo "crun=$(crun --version 2>/dev/null | head -1)"
    echo "java=$(java -version 2>&1 | head -1)"
    echo "nomad=$({NOMAD_BIN} version 2>/dev/null | head -1)"
    echo "plugin=$({PLUGIN_DIR}/{PLUGIN_BINARY} version 2>/dev/null | head -1)"
  }} > "$cache.tmp" && mv "$cache.tmp" "$cache"
fi
cat "$cache"
echo "os=$(. /etc/os-release; echo $PRETTY_NAME)"
# Written by provision/build-box.sh; absent on an ssh:// host that was not built from the box.
echo "box=$(jq -r '.release + " " + .box_hash' /etc/nomad-lab-box.json 2>/dev/null || echo none)"
"""


def collect(host: LabHost) -> dict[str, str]:
    return parse(host, host.sudo(FACTS_SCRIPT, check=False).stdout)


def parse(host: LabHost, stdout: str) -> dict[str, str]:
    """FACTS_SCRIPT's "key=value" lines, with the target's URL."""
    facts = {"target": host.spec.url}
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        if key:
            facts[key] = value.strip()
    return facts


def render(facts: dict[str, str]) -> str:
    return json.dumps(facts, indent=2, sort_keys=True)
