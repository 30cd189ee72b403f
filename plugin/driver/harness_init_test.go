package driver

// Harness tests of the container's init (shim/init.go) with real crun and
// a real JVM: signals reach the JVM with the effect they have outside a
// container, also during its start-up; orphans are reaped; PID 1 is the
// init and the JVM its child.

import (
	"strings"
	"testing"
	"time"
)

func TestHarnessSignalWithoutHandlerKillsJVM(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	// The init's threads have pids of their own: its child is the JVM.
	if out, code := h.exec(t, cfg, "/bin/sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/$(cat /proc/1/task/*/children | cut -d' ' -f1)/comm"); code != 0 ||
		!strings.HasPrefix(out, "/.java-crun/java-crun-init ") || !strings.Contains(out, "\njava\n") {
		t.Fatalf("want PID 1 the init and its child java, got %q", out)
	}
	// sleeper.jar has no SIGUSR1 handler: outside a container `kill -USR1`
	// kills a JVM (exit 138); the kernel used to drop it for the JVM as PID 1.
	if err := h.SignalTask(cfg.ID, "SIGUSR1"); err != nil {
		t.Fatal(err)
	}
	res := h.wait(t, cfg.ID, time.Minute)
	if res.Signal != 10 || res.ExitCode != 138 {
		t.Fatalf("after SIGUSR1: %+v, want killed by signal 10 (138)", res)
	}
	h.destroyAndAssertGone(t, cfg)
}

func TestHarnessSignalDuringJVMStartReachesIt(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	// At once: the JVM is still starting (a second or more under TCG).
	if err := h.SignalTask(cfg.ID, "SIGUSR1"); err != nil {
		t.Fatal(err)
	}
	res := h.wait(t, cfg.ID, time.Minute)
	t.Logf("JVM had printed its start line: %v", strings.Contains(readLog(t, cfg, "stdout"), "sleeper started"))
	if res.Signal != 10 || res.ExitCode != 138 {
		t.Fatalf("SIGUSR1 during start-up: %+v, want the JVM killed by it (138), as outside a container", res)
	}
	h.destroyAndAssertGone(t, cfg)
}

func TestHarnessInitReapsZombies(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	// The subshell's sleep is orphaned inside the container, so it is
	// re-parented to PID 1; once it exited, only PID 1 can reap it.
	out, code := h.exec(t, cfg, "/bin/sh", "-c",
		`(sleep 0.3 &); sleep 3; for s in /proc/[0-9]*/status; do grep -q '^State:.*Z' $s && echo "zombie $s"; done; echo checked`)
	if code != 0 || !strings.Contains(out, "checked") || strings.Contains(out, "zombie") {
		t.Fatalf("exit %d: %s", code, out)
	}
	_ = h.DestroyTask(cfg.ID, true)
}

func TestHarnessStopAndContinueReachTheJVM(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	states := func() string {
		t.Helper()
		out, code := h.exec(t, cfg, "/bin/sh", "-c",
			`jvm=$(cat /proc/1/task/*/children | cut -d' ' -f1); echo "init $(grep '^State' /proc/1/status)"; echo "jvm $(grep '^State' /proc/$jvm/status)"`)
		if code != 0 {
			t.Fatalf("reading the states: exit %d: %s", code, out)
		}
		return out
	}
	// Outside a container `kill -STOP` stops the JVM; SIGSTOP cannot be
	// caught, so an init that received it would stop itself alone.
	if err := h.SignalTask(cfg.ID, "SIGSTOP"); err != nil {
		t.Fatal(err)
	}
	seen, deadline := states(), time.Now().Add(10*time.Second)
	for !strings.Contains(seen, "jvm State:\tT") {
		if time.Now().After(deadline) {
			t.Fatalf("the JVM was not stopped 10s after SIGSTOP; last seen:\n%s", seen)
		}
		time.Sleep(100 * time.Millisecond)
		seen = states()
	}
	if strings.Contains(seen, "init State:\tT") {
		t.Fatalf("after SIGSTOP want the init running (it forwards the SIGCONT):\n%s", seen)
	}
	if err := h.SignalTask(cfg.ID, "SIGCONT"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the JVM continued after SIGCONT", func() bool {
		return !strings.Contains(states(), "jvm State:\tT")
	})
	if err := h.DestroyTask(cfg.ID, true); err != nil {
		t.Fatal(err)
	}
	h.assertGone(t, cfg)
}
