package driver

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// knownCaps are the Linux capabilities up to 5.9 (CAP_CHECKPOINT_RESTORE):
// a name outside the list is a typo, and crun would fail on it at start.
var knownCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// normalizeCaps turns "net_raw", "NET_RAW" or "CAP_NET_RAW" into
// "CAP_NET_RAW"; "all" expands to every capability. field names the config
// key in the error.
func normalizeCaps(field string, names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		c := strings.ToUpper(strings.TrimSpace(n))
		if c == "ALL" {
			out = append(out, knownCaps...)
			continue
		}
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		if !slices.Contains(knownCaps, c) {
			return nil, fmt.Errorf("%s: unknown capability %q (names look like \"net_raw\" or \"CAP_NET_RAW\"; see capabilities(7))", field, n)
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// taskCapabilities is the task's capability set: the default set within
// the operator's allow_caps, plus cap_add (each of which allow_caps must
// hold), minus cap_drop. A narrower allow_caps therefore also narrows
// the default: the operator's list is the ceiling for every task.
func taskCapabilities(allow []string, capAdd, capDrop []string) ([]string, error) {
	add, err := normalizeCaps("task config cap_add", capAdd)
	if err != nil {
		return nil, err
	}
	drop, err := normalizeCaps("task config cap_drop", capDrop)
	if err != nil {
		return nil, err
	}
	for _, c := range add {
		if !slices.Contains(allow, c) {
			return nil, fmt.Errorf("task config cap_add %s is not allowed on this node: the plugin's allow_caps does not list %q; add it to allow_caps in the agent's plugin \"nomad-driver-java-crun\" config, or remove it from cap_add",
				c, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
	}
	caps := []string{} // non-nil: an empty set is not "the default"
	for _, c := range append(slices.Clone(crun.DefaultCapabilities), add...) {
		if slices.Contains(allow, c) && !slices.Contains(drop, c) && !slices.Contains(caps, c) {
			caps = append(caps, c)
		}
	}
	slices.Sort(caps)
	return caps, nil
}
