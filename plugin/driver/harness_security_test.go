package driver

// Harness tests of the security baseline with real crun: the default
// seccomp profile blocks what the capability set and no_new_privileges
// would allow, cap_add works within allow_caps, secrets are masked, and a
// root task is refused unless the operator allows it.

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/drivers"
)

// startSleeperWith starts sleeper.jar as root with tc's extra fields on a
// plugin with the extra plugin config.
func startSleeperWith(t *testing.T, plugin map[string]any, tc TaskConfig) (*harness, *drivers.TaskConfig) {
	t.Helper()
	requireRuntime(t)
	h := newHarnessWithConfig(t, testRoot(t), plugin)
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 256, nil)
	t.Cleanup(cleanup)
	tc.JarPath = "local/sleeper.jar"
	if err := cfg.EncodeConcreteDriverConfig(&tc); err != nil {
		t.Fatal(err)
	}
	h.start(t, cfg)
	waitRunningJVM(t, h, cfg)
	return h, cfg
}

func (h *harness) exec(t *testing.T, cfg *drivers.TaskConfig, argv ...string) (string, int) {
	t.Helper()
	res, err := h.ExecTask(cfg.ID, argv, 30*time.Second)
	if err != nil {
		t.Fatalf("exec %v: %v", argv, err)
	}
	return string(res.Stdout) + string(res.Stderr), res.ExitResult.ExitCode
}

func TestHarnessSeccompBlocksWhatCapsAllow(t *testing.T) {
	// Unconfined first: creating a user namespace needs no capability, so
	// only seccomp can stop it; without cap_add, mknod fails for lack of
	// CAP_MKNOD.
	h, cfg := startSleeperWith(t, map[string]any{"seccomp": "unconfined"}, TaskConfig{})
	if out, code := h.exec(t, cfg, "/usr/bin/unshare", "-U", "/bin/true"); code != 0 {
		t.Fatalf("unconfined: unshare -U failed (exit %d: %s): the seccomp test below would prove nothing", code, out)
	}
	if out, code := h.exec(t, cfg, "/bin/mknod", "/tmp/null", "c", "1", "3"); code == 0 {
		t.Fatalf("mknod worked without CAP_MKNOD: %s", out)
	}
	_ = h.DestroyTask(cfg.ID, true)

	// The default profile, with CAP_MKNOD added within allow_caps.
	h, cfg = startSleeperWith(t, map[string]any{"allow_caps": append(defaultAllowCaps(), "mknod")},
		TaskConfig{CapAdd: []string{"mknod"}})
	out, code := h.exec(t, cfg, "/usr/bin/unshare", "-U", "/bin/true")
	if code == 0 || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("default seccomp: unshare -U exit %d %q, want EPERM", code, out)
	}
	if out, code := h.exec(t, cfg, "/bin/mknod", "/tmp/null", "c", "1", "3"); code != 0 {
		t.Fatalf("cap_add mknod: mknod failed (exit %d): %s", code, out)
	}
	for _, secret := range []string{"/etc/shadow", "/etc/gshadow"} {
		if out, code := h.exec(t, cfg, "/bin/cat", secret); code != 0 || out != "" {
			t.Errorf("%s as root: exit %d, %d bytes: not masked", secret, code, len(out))
		}
	}
	if out, _ := h.exec(t, cfg, "/bin/sh", "-c", "ls -A /etc/ssh | wc -l"); strings.TrimSpace(out) != "0" {
		t.Errorf("/etc/ssh shows %s entries: not masked", out)
	}
	// The JVM itself still starts threads (clone3 -> ENOSYS -> clone).
	if out := readLog(t, cfg, "stdout"); !strings.Contains(out, "sleeper started") {
		t.Fatalf("stdout %q", out)
	}
}

func TestHarnessRootRefusedUnlessAllowed(t *testing.T) {
	requireRuntime(t)
	h := newHarnessWithConfig(t, testRoot(t), map[string]any{"allow_root": false})
	cfg, cleanup := h.taskConfig(t, "hello.jar", 256, nil)
	defer cleanup()
	_, _, err := h.StartTask(cfg)
	if err == nil || !strings.Contains(err.Error(), "allow_root = true") || structs.IsRecoverable(err) {
		t.Fatalf("root task on allow_root = false: %v (recoverable %v)", err, structs.IsRecoverable(err))
	}
	cfg2, cleanup2 := h.taskConfig(t, "hello.jar", 256, nil)
	defer cleanup2()
	tc := TaskConfig{JarPath: "local/hello.jar", CapAdd: []string{"sys_admin"}}
	_ = cfg2.EncodeConcreteDriverConfig(&tc)
	cfg2.User = "nobody"
	_, _, err = h.StartTask(cfg2)
	if err == nil || !strings.Contains(err.Error(), "cap_add CAP_SYS_ADMIN is not allowed") || structs.IsRecoverable(err) {
		t.Fatalf("cap_add sys_admin: %v", err)
	}
}
