package crun

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// denied returns the errno of an unconditional rule for name, or 0.
func denied(s *specs.LinuxSeccomp, name string) uint {
	for _, r := range s.Syscalls {
		if slices.Contains(r.Names, name) && len(r.Args) == 0 && r.Action == specs.ActErrno {
			return *r.ErrnoRet
		}
	}
	return 0
}

func cloneFlagsDenied(s *specs.LinuxSeccomp) []uint64 {
	var flags []uint64
	for _, r := range s.Syscalls {
		if slices.Equal(r.Names, []string{"clone"}) && len(r.Args) == 1 && r.Args[0].Op == specs.OpMaskedEqual {
			flags = append(flags, r.Args[0].Value)
		}
	}
	return flags
}

func TestDefaultSeccompDeniesEscapes(t *testing.T) {
	s := DefaultSeccomp(DefaultCapabilities)
	if s.DefaultAction != specs.ActAllow {
		t.Fatalf("default action %s", s.DefaultAction)
	}
	for _, name := range []string{"unshare", "setns", "mount", "umount2", "pivot_root", "keyctl", "add_key",
		"request_key", "init_module", "finit_module", "delete_module", "clock_settime", "settimeofday",
		"adjtimex", "clock_adjtime", "kexec_load", "reboot", "swapon", "swapoff", "bpf", "perf_event_open",
		"userfaultfd", "open_by_handle_at", "fsopen", "move_mount"} {
		if got := denied(s, name); got != uint(unix.EPERM) {
			t.Errorf("%s: errno %d, want EPERM", name, got)
		}
	}
	// Threads and fork must keep working: clone is denied only with a
	// namespace flag, clone3 returns ENOSYS so that glibc falls back to clone.
	if denied(s, "clone") != 0 || denied(s, "fork") != 0 || denied(s, "ptrace") != 0 {
		t.Error("clone, fork or ptrace denied outright (moby allows ptrace on kernels >= 4.8)")
	}
	if got := denied(s, "clone3"); got != uint(unix.ENOSYS) {
		t.Errorf("clone3 errno %d, want ENOSYS", got)
	}
	flags := cloneFlagsDenied(s)
	for _, f := range []uint64{unix.CLONE_NEWUSER, unix.CLONE_NEWNS, unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWCGROUP, unix.CLONE_NEWIPC, unix.CLONE_NEWUTS} {
		if !slices.Contains(flags, f) {
			t.Errorf("clone with flag %#x not denied", f)
		}
	}
	for _, r := range s.Syscalls {
		for _, a := range r.Args {
			if a.Value != a.ValueTwo { // (arg & Value) == ValueTwo: "the flag is set"
				t.Errorf("masked rule %+v does not test for the flag being set", a)
			}
		}
	}
	if !slices.Contains(s.Architectures, specs.ArchX86) && !slices.Contains(s.Architectures, specs.ArchARM) {
		t.Errorf("32-bit ABI missing from %v: its calls would bypass the rules", s.Architectures)
	}
}

func TestDefaultSeccompFollowsCapabilities(t *testing.T) {
	s := DefaultSeccomp(append(slices.Clone(DefaultCapabilities), "CAP_SYS_ADMIN", "CAP_SYS_TIME"))
	if denied(s, "mount") != 0 || denied(s, "unshare") != 0 || len(cloneFlagsDenied(s)) != 0 || denied(s, "clone3") != 0 {
		t.Error("CAP_SYS_ADMIN must lift the namespace and mount rules, as in moby's profile")
	}
	if denied(s, "clock_settime") != 0 {
		t.Error("CAP_SYS_TIME must lift the clock rules")
	}
	if denied(s, "keyctl") == 0 || denied(s, "init_module") == 0 {
		t.Error("the keyring and module rules stay without their capability")
	}
}

func TestDefaultSeccompJSON(t *testing.T) {
	data, err := json.Marshal(BuildSpec(SpecInput{Seccomp: DefaultSeccomp(DefaultCapabilities)}))
	if err != nil {
		t.Fatal(err)
	}
	js := string(data)
	for _, want := range []string{`"defaultAction":"SCMP_ACT_ALLOW"`, `"errnoRet":1`, `"errnoRet":38`, `"op":"SCMP_CMP_MASKED_EQ"`, `"SCMP_ARCH_X86_64"`} {
		if !strings.Contains(js, want) {
			t.Errorf("config.json lacks %s", want)
		}
	}
}
