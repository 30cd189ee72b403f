package task

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/drivers"
	"golang.org/x/sys/unix"
)

// startShell runs script under sh and reaps it when the test ends.
func startShell(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

func liveHandle(pid int) *Handle {
	return newHandle(State{ContainerID: "c1", ContainerPID: pid},
		&drivers.TaskConfig{ID: "a/t/1", Name: "t"}, nil, hclog.NewNullLogger())
}

func TestCatchesSignalReadsSigCgt(t *testing.T) {
	pid := startShell(t, `trap "exit 3" TERM; while :; do sleep 0.05; done`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		caught, err := catchesSignal(pid, unix.SIGTERM)
		if err != nil {
			t.Fatal(err)
		}
		if caught {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell's TERM trap never showed in SigCgt")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if caught, err := catchesSignal(pid, unix.SIGUSR2); err != nil || caught {
		t.Fatalf("SIGUSR2 has no trap: caught=%v err=%v", caught, err)
	}
}

func TestCatchesSignalOnMissingProcess(t *testing.T) {
	if _, err := catchesSignal(1<<30, unix.SIGTERM); err == nil {
		t.Fatal("want an error for a pid that does not exist")
	}
}

func TestAwaitHandlerWaitsForLateHandler(t *testing.T) {
	// The handler appears after ~300 ms, as a JVM's SIGTERM handler does
	// after exec; awaitHandler must wait for it rather than return at once.
	pid := startShell(t, `sleep 0.3; trap "exit 3" TERM; while :; do sleep 0.05; done`)
	waited, caught := liveHandle(pid).awaitHandler(unix.SIGTERM, time.Now().Add(10*time.Second))
	if !caught {
		t.Fatalf("handler not seen after %s", waited)
	}
	if waited < 200*time.Millisecond {
		t.Fatalf("returned after %s, before the handler can have been installed", waited)
	}
}

func TestAwaitHandlerGivesUpAtDeadline(t *testing.T) {
	pid := startShell(t, `while :; do sleep 0.05; done`)
	start := time.Now()
	_, caught := liveHandle(pid).awaitHandler(unix.SIGUSR1, start.Add(300*time.Millisecond))
	if caught {
		t.Fatal("no USR1 trap was installed")
	}
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("want a return at the 300 ms deadline, took %s", took)
	}
}

func TestAwaitHandlerSkipsSigkill(t *testing.T) {
	waited, caught := liveHandle(startShell(t, "sleep 5")).awaitHandler(unix.SIGKILL, time.Now().Add(time.Minute))
	if !caught || waited != 0 {
		t.Fatalf("SIGKILL is always delivered: waited=%s caught=%v", waited, caught)
	}
}

// TestAwaitHandlerLooksAtTheInitsChild: with the init as PID 1, what
// decides a signal's fate is the JVM's handler (the init's child), not the
// init's, which catches everything.
func TestAwaitHandlerLooksAtTheInitsChild(t *testing.T) {
	// The first 0.5 s without any child: bash's read times out on a pipe that
	// stays silent (a `sleep 0.5` would be a child, and the check below would
	// race with its fork; it did, under load).
	cmd := exec.Command("/bin/bash", "-c", `read -t 0.5 x; sh -c 'trap "exit 3" TERM; while :; do sleep 0.05; done' & wait`)
	cmd.Args[0] = "/.java-crun/java-crun-init" // how the init shows in /proc/<pid>/cmdline
	silent, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 100; i++ { // until the fork has exec'd sh
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); strings.HasPrefix(string(b), cmd.Args[0]) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := jvmPID(cmd.Process.Pid); got != 0 {
		t.Fatalf("jvmPID before the child exists = %d, want 0", got)
	}
	h := liveHandle(cmd.Process.Pid)
	waited, caught := h.awaitHandler(unix.SIGTERM, time.Now().Add(10*time.Second))
	if !caught || waited < 400*time.Millisecond {
		t.Fatalf("waited %s caught %v: want to wait for the child's trap, not the init's", waited, caught)
	}
	child := jvmPID(cmd.Process.Pid)
	if child <= 0 || child == cmd.Process.Pid {
		t.Fatalf("jvmPID = %d", child)
	}
	if self := startShell(t, "sleep 5"); jvmPID(self) != self {
		t.Fatal("a JVM that is PID 1 itself (no init) must be its own target")
	}
}
