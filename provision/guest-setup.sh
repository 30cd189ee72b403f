#!/bin/sh
# Prepare and check a lab host (the Vagrant VM or any ssh:// Linux host). Run as root;
# idempotent. Creates /opt/lab/{bin,jars,run}, makes sure cgroup v2 is the only hierarchy with
# the memory, cpu and pids controllers enabled for children (or, on a host booted with
# systemd.unified_cgroup_hierarchy=0, that the pure v1 hierarchy has them), and that crun and
# Java run.
# On success prints ONE line of JSON (kernel, cgroup mode, controllers, crun, java, os, netem);
# otherwise prints one line per problem on stderr and exits 1.
set -u

problems=""
problem() { problems="${problems}$1
"; }

json_escape() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r'; }

if [ "$(id -u)" != 0 ]; then
    echo "guest-setup.sh must run as root (sudo sh guest-setup.sh)" >&2
    exit 1
fi

mkdir -p /opt/lab/bin /opt/lab/jars /opt/lab/run

# --- cgroup v2 alone, or pure v1 when the kernel command line asked for it ---------------
# A lab booted for cgroup v1 (LAB_CGROUP=v1: systemd.unified_cgroup_hierarchy=0 on the kernel
# command line) must be pure legacy: systemd's hybrid mode (a cgroup2 hierarchy beside the v1
# ones) is refused by crun. Anything else must be pure v2.
wanted="v2"
case " $(cat /proc/cmdline 2>/dev/null) " in
*" systemd.unified_cgroup_hierarchy=0 "*) wanted="v1" ;;
esac
cgroup_mode="none"
fstype=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || true)
if [ "$fstype" = cgroup2fs ]; then
    cgroup_mode="v2"
elif grep -q ' cgroup2 ' /proc/mounts; then
    cgroup_mode="hybrid"
elif grep -q ' cgroup ' /proc/mounts; then
    cgroup_mode="v1"
fi
controllers=""
if [ "$wanted" = v1 ]; then
    case "$cgroup_mode" in
    v1) ;;
    hybrid) problem "cgroup mode is 'hybrid' (cgroup2 at $(awk '$3=="cgroup2"{print $2}' /proc/mounts | tr '\n' ' ')), not pure v1: crun refuses hybrid mode; boot with systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1 (LAB_CGROUP=v1 does)" ;;
    *) problem "the kernel command line asks for cgroup v1 but the mode is '$cgroup_mode': this release's systemd may not boot the legacy hierarchy; use LAB_CGROUP=v2" ;;
    esac
    if [ "$cgroup_mode" = v1 ]; then
        # v1 controllers are hierarchies of their own, mounted by systemd under /sys/fs/cgroup.
        controllers=$(awk '$3=="cgroup"{n=split($4,o,","); for(i=1;i<=n;i++) if (o[i] ~ /^(cpuset|cpu|cpuacct|memory|pids|blkio|devices|freezer|net_cls|net_prio|perf_event|hugetlb|rdma|misc)$/) print o[i]}' /proc/mounts | sort -u | tr '\n' ' ' | sed 's/ $//')
        for c in memory cpu pids; do
            case " $controllers " in
            *" $c "*) ;;
            *) problem "cgroup v1 controller '$c' is not mounted under /sys/fs/cgroup: check /proc/cgroups and that the command line has no cgroup_disable=$c or cgroup_no_v1=" ;;
            esac
        done
    fi
elif [ "$cgroup_mode" != v2 ]; then
    problem "cgroup mode is '$cgroup_mode', not pure v2: boot with systemd.unified_cgroup_hierarchy=1 (kernel cmdline) and reboot"
elif grep -q ' cgroup ' /proc/mounts; then
    problem "cgroup v1 hierarchies are mounted next to v2 ($(awk '$3=="cgroup"{print $2}' /proc/mounts | tr '\n' ' ')): crun refuses hybrid mode; boot with systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"
fi
if [ "$cgroup_mode" = v2 ] && [ "$wanted" = v2 ]; then
    controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
    for c in memory cpu pids; do
        case " $controllers " in
        *" $c "*)
            case " $(cat /sys/fs/cgroup/cgroup.subtree_control) " in
            *" $c "*) ;;
            *) echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
                   problem "cgroup v2 controller '$c' cannot be enabled in /sys/fs/cgroup/cgroup.subtree_control: check that no v1 hierarchy holds it" ;;
            esac ;;
        *) problem "cgroup v2 controller '$c' missing from /sys/fs/cgroup/cgroup.controllers: boot with systemd.unified_cgroup_hierarchy=1 (and without cgroup_disable=$c)" ;;
        esac
    done
fi

# --- crun and java ----------------------------------------------------------------------
crun_version=""
if ! command -v crun >/dev/null 2>&1; then
    problem "crun not found on PATH: install it with apt-get install -y crun"
elif out=$(crun --version 2>&1); then
    crun_version=$(printf '%s\n' "$out" | sed -n '1s/^crun version //p')
else
    problem "crun does not run ('crun --version': $(printf '%s' "$out" | head -n 1)): install it with apt-get install -y crun"
fi
java_version=""
if ! command -v java >/dev/null 2>&1; then
    problem "java not found on PATH: install a headless JRE, e.g. apt-get install -y openjdk-17-jre-headless"
elif out=$(java -version 2>&1); then
    java_version=$(printf '%s\n' "$out" | sed -n '1s/.*version "\([^"]*\)".*/\1/p')
else
    problem "java does not run ('java -version': $(printf '%s' "$out" | head -n 1)): install a headless JRE, e.g. apt-get install -y openjdk-17-jre-headless"
fi

# --- CNI plugins for group networks -------------------------------------------------------
# The agents' cni_path (/opt/lab/cni) holds only the five plugins Nomad's bridge network calls
# (client/allocrunner/cni/bridge.go): at every agent start Nomad's plugins_cni fingerprinter
# runs each file there, and Debian's 16 plugins took 5 s of a 13 s agent start under TCG.
# Without Debian's plugins the bridge tests skip (the node has no bridge plugin version).
mkdir -p /opt/lab/cni
for plugin in loopback bridge host-local firewall portmap; do
    if [ -x "/usr/lib/cni/$plugin" ]; then
        ln -sfn "/usr/lib/cni/$plugin" "/opt/lab/cni/$plugin"
    fi
done

# --- tc netem for network faults (optional: its tests skip without it) -------------------
netem="unavailable"
if grep -q '^sch_netem ' /proc/modules 2>/dev/null || modprobe sch_netem 2>/dev/null; then
    netem="loaded"
fi

if [ -n "$problems" ]; then
    printf '%s' "$problems" >&2
    exit 1
fi

os_release=$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-unknown}")
printf '{"kernel": "%s", "cgroup": "%s", "controllers": "%s", "crun": "%s", "java": "%s", "os": "%s", "netem": "%s"}\n' \
    "$(json_escape "$(uname -r)")" "$cgroup_mode" "$(json_escape "$controllers")" \
    "$(json_escape "$crun_version")" "$(json_escape "$java_version")" \
    "$(json_escape "$os_release")" "$netem"
