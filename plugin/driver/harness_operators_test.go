package driver

// Harness tests (real crun and java, run in the lab VM like harness_test.go)
// for the operator-facing behaviour: exit codes from the real wait status,
// node problems as recoverable errors, no orphaned containers, and exec
// sessions that end with their command.

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	dtestutil "github.com/hashicorp/nomad/plugins/drivers/testutils"
	"golang.org/x/sys/unix"
)

// newHarnessWithConfig is a plugin instance on root with extra plugin config
// (e.g. a short orphan_grace_period); it does not recover anything by itself.
// newHarness is the usual one, on a fresh root.
func newHarnessWithConfig(t *testing.T, root string, extra map[string]any) *harness {
	t.Helper()
	d := New(hclog.New(&hclog.LoggerOptions{Name: t.Name() + "-2", Level: hclog.Debug, Output: testWriter{t}})).(*Driver)
	h := &harness{DriverHarness: dtestutil.NewDriverHarness(t, d), driver: d, root: root}
	cfg := pluginConfigForTest(root)
	for k, v := range extra {
		cfg[k] = v
	}
	var data []byte
	if err := base.MsgPackEncode(&data, cfg); err != nil {
		t.Fatal(err)
	}
	if err := h.SetConfig(&base.Config{PluginConfig: data, AgentConfig: &base.AgentConfig{Driver: &base.ClientDriverConfig{}}}); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, d)
	return h
}

func TestHarnessAppExitCodeAbove128IsNotASignal(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	for _, code := range []string{"143", "137"} {
		cfg, cleanup := h.taskConfig(t, "exitcode.jar", 256, nil, code)
		defer cleanup()
		h.start(t, cfg)
		res := h.wait(t, cfg.ID, 2*time.Minute)
		if res.ExitCode != atoi(t, code) || res.Signal != 0 || res.Err != nil || res.OOMKilled {
			t.Fatalf("exitcode.jar %s: %+v (want exit %s, signal 0: the app chose that code)", code, res, code)
		}
		h.destroyAndAssertGone(t, cfg)
	}
}

func TestHarnessKilledFromOutsideReportsTheSignal(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	hd, _ := h.driver.tasks.Get(cfg.ID)
	// Not through the driver: only the kernel's wait status can tell.
	if err := unix.Kill(hd.State.ContainerPID, unix.SIGKILL); err != nil {
		t.Fatalf("kill JVM pid %d: %v", hd.State.ContainerPID, err)
	}
	res := h.wait(t, cfg.ID, time.Minute)
	if res.ExitCode != 137 || res.Signal != 9 {
		t.Fatalf("after SIGKILL from outside: %+v (want exit 137, signal 9)", res)
	}
	h.destroyAndAssertGone(t, cfg)
}

func TestHarnessBrokenCrunAtStartIsRecoverable(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "hello.jar", 256, nil)
	defer cleanup()
	// crun loses its execute bit after the last fingerprint.
	broken := filepath.Join(t.TempDir(), "crun")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.driver.mu.Lock()
	h.driver.rt.CrunPath = broken
	h.driver.mu.Unlock()
	_, _, err := h.StartTask(cfg)
	if err == nil || !structs.IsRecoverable(err) {
		t.Fatalf("want a recoverable error, got %v", err)
	}
	for _, want := range []string{"node problem", broken, "no execute permission"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestHarnessDestroyWithoutHandleRemovesContainer(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	// A new plugin instance that never recovered the task (recovery
	// failed): Nomad then calls DestroyTask with the task ID only.
	h2 := newHarnessWithConfig(t, h.root, nil)
	if err := h2.DestroyTask(cfg.ID, true); err != nil {
		t.Fatalf("DestroyTask without a handle: %v", err)
	}
	h.assertGone(t, cfg)
	if res := h.wait(t, cfg.ID, time.Minute); res.ExitCode != 137 {
		t.Logf("the first instance saw exit %+v", res)
	}
}

func TestHarnessOrphanSweep(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	kept, cleanup1 := h.taskConfig(t, "sleeper.jar", 256, nil)
	defer cleanup1()
	orphan, cleanup2 := h.taskConfig(t, "sleeper.jar", 256, nil)
	defer cleanup2()
	thKept := h.start(t, kept)
	h.start(t, orphan)
	waitRunningJVM(t, h, kept)
	waitRunningJVM(t, h, orphan)

	// The plugin restarts; Nomad recovers only one of the two tasks.
	h2 := newHarnessWithConfig(t, h.root, map[string]any{"orphan_grace_period": "3s"})
	if err := h2.RecoverTask(thKept); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	res := h.wait(t, orphan.ID, time.Minute) // the first instance still watches it
	t.Logf("orphan ended: %+v", res)
	h.assertGone(t, orphan)
	st, err := h2.InspectTask(kept.ID)
	if err != nil || st.State != drivers.TaskStateRunning {
		t.Fatalf("the recovered task was touched: %+v %v", st, err)
	}
	if err := h2.DestroyTask(kept.ID, true); err != nil {
		t.Fatal(err)
	}
	h.assertGone(t, kept)
}

func TestHarnessExecStreamingEndsWithCommand(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	// Nomad's client keeps stdin open for the whole session.
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	out := &lockedBuffer{}
	done := make(chan *drivers.ExitResult, 1)
	go func() {
		res, err := h.driver.ExecTaskStreaming(context.Background(), cfg.ID, &drivers.ExecOptions{
			Command: []string{"/bin/sh", "-c", "echo inside; exit 5"}, Stdin: stdinR, Stdout: out, Stderr: out})
		if err != nil {
			t.Errorf("exec: %v", err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		if res == nil || res.ExitCode != 5 || strings.TrimSpace(out.String()) != "inside" {
			t.Fatalf("exec: %+v, output %q", res, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("exec did not return after its command ended (output %q)", out.String())
	}
}

// Nomad's own exec conformance cases: plain and TTY sessions, exit codes,
// stdin, stty size after resize events, background children. (Its
// TestExecFSIsolation is left out: it expects /proc/self/cgroup to end in
// ".scope", which a container with a cgroup namespace shows as "/".)
func TestHarnessExecConformance(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	dtestutil.TestExecTaskStreamingBasicResponses(t, h.DriverHarness, cfg.ID)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
