package crun

import (
	"runtime"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The default seccomp profile is a denylist: everything is allowed except the
// calls the container ecosystem's default (moby's profile) refuses to a
// container without the matching capability. They fail with EPERM, as
// under Docker, so a program sees "Operation not permitted" instead of
// dying. A denylist rather than moby's 350-name allowlist: the JVM and the
// JDK's tools use many calls, and an allowlist that misses one breaks a JVM
// update in ways that are hard to diagnose; the calls denied here are the
// ones that matter for a container's isolation.
//
// Each group is lifted when the task holds the capability that makes the
// call legitimate (as moby does), so that cap_add means what it says.
type seccompGroup struct {
	cap   string // "" = denied whatever the capabilities
	names []string
}

var seccompGroups = []seccompGroup{
	// New namespaces and mounts: the way out of a container. unshare
	// without CAP_SYS_ADMIN is still allowed by the kernel for a user
	// namespace, which then grants every capability inside it; that is
	// the attack surface this profile exists to close.
	{"CAP_SYS_ADMIN", []string{
		"unshare", "setns", "mount", "umount", "umount2", "pivot_root",
		"open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
		"quotactl", "lookup_dcookie", "name_to_handle_at",
	}},
	// The kernel keyring is not namespaced: keys leak between containers.
	{"", []string{"keyctl", "add_key", "request_key"}},
	{"CAP_SYS_MODULE", []string{"init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"}},
	{"CAP_SYS_TIME", []string{"clock_settime", "clock_settime64", "settimeofday", "stime", "adjtimex", "clock_adjtime", "clock_adjtime64"}},
	{"CAP_SYS_BOOT", []string{"reboot", "kexec_load", "kexec_file_load"}},
	{"CAP_SYS_ADMIN", []string{"swapon", "swapoff"}},
	// Kernel attack surface with a history of exploits, unprivileged or not.
	{"CAP_SYS_ADMIN", []string{"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register"}},
	{"CAP_SYS_PTRACE", []string{"kcmp"}},
	{"CAP_SYS_PACCT", []string{"acct"}},
	{"CAP_SYSLOG", []string{"syslog"}},
	{"CAP_SYS_RAWIO", []string{"iopl", "ioperm"}},
	{"CAP_DAC_READ_SEARCH", []string{"open_by_handle_at"}},
	{"CAP_SYS_TTY_CONFIG", []string{"vhangup"}},
	// Obsolete calls nothing needs.
	{"", []string{"_sysctl", "nfsservctl", "uselib", "ustat", "sysfs", "vm86", "vm86old"}},
}

// namespaceCloneFlags are clone(2)'s new-namespace flags: clone with any of
// them is denied like unshare (threads and fork use clone without them).
var namespaceCloneFlags = []uint64{
	unix.CLONE_NEWNS, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, unix.CLONE_NEWUSER,
	unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWCGROUP,
}

// seccompArchitectures are the ABIs a process of this machine can use; a
// syscall from an ABI not listed would be killed by libseccomp's bad-arch
// action, so the 32-bit ABIs are listed and get the same rules.
func seccompArchitectures(goarch string) []specs.Arch {
	switch goarch {
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	default: // amd64
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	}
}

// DefaultSeccomp is the default profile for a process holding caps.
func DefaultSeccomp(caps []string) *specs.LinuxSeccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	deny := func(names ...string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: names, Action: specs.ActErrno, ErrnoRet: &eperm}
	}
	s := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: seccompArchitectures(runtime.GOARCH),
	}
	for _, g := range seccompGroups {
		if g.cap == "" || !slices.Contains(caps, g.cap) {
			s.Syscalls = append(s.Syscalls, deny(g.names...))
		}
	}
	if !slices.Contains(caps, "CAP_SYS_ADMIN") {
		for _, flag := range namespaceCloneFlags {
			rule := deny("clone")
			rule.Args = []specs.LinuxSeccompArg{{Index: 0, Value: flag, ValueTwo: flag, Op: specs.OpMaskedEqual}}
			s.Syscalls = append(s.Syscalls, rule)
		}
		// clone3 passes its flags in memory, out of seccomp's sight. ENOSYS
		// makes glibc fall back to clone, whose flags the rules above see
		// (moby does the same).
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})
	}
	return s
}
