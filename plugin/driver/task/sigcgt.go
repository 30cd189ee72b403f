package task

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// handlerPollInterval is how often Stop re-reads the task's caught-signal
// mask while it waits for the JVM to install its handler.
const handlerPollInterval = 50 * time.Millisecond

// catchesSignal reports whether process pid has a handler installed for sig,
// read from the SigCgt mask in /proc/<pid>/status.
func catchesSignal(pid int, sig unix.Signal) (bool, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		mask, ok := strings.CutPrefix(line, "SigCgt:")
		if !ok {
			continue
		}
		bits, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
		if err != nil {
			return false, fmt.Errorf("parse SigCgt of pid %d: %w", pid, err)
		}
		return bits&(1<<(uint(sig)-1)) != 0, nil
	}
	return false, fmt.Errorf("no SigCgt line in /proc/%d/status", pid)
}

// awaitHandler waits until the JVM catches sig, the task ends or deadline
// passes, and reports how long it waited. A stop in the first second of a
// JVM's life (before Java registers its SIGTERM handler) would otherwise
// kill it without running its shutdown hooks (with the init, see
// shim/init.go), or be dropped by the kernel (a JVM that is itself PID 1,
// in containers started before the init existed).
func (h *Handle) awaitHandler(sig unix.Signal, deadline time.Time) (time.Duration, bool) {
	start := time.Now()
	pid := h.State.ContainerPID
	if pid <= 0 || sig == unix.SIGKILL || sig == unix.SIGSTOP {
		return 0, true // the kernel always delivers these two
	}
	for {
		caught, err := false, error(nil)
		if jvm := jvmPID(pid); jvm > 0 { // 0: the init has not started it yet
			caught, err = catchesSignal(jvm, sig)
		}
		if err != nil || caught {
			// An unreadable status means the process is gone; the signal
			// attempt that follows reports or absorbs that.
			return time.Since(start), caught
		}
		if !time.Now().Before(deadline) {
			return time.Since(start), false
		}
		select {
		case <-h.done:
			return time.Since(start), false
		case <-time.After(min(handlerPollInterval, time.Until(deadline))):
		}
	}
}

// jvmPID is the JVM of the container whose init is pid: the init's child
// when pid runs java-crun-init, else pid itself (the JVM as PID 1); 0 while
// the init has no child yet.
func jvmPID(pid int) int {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return pid // gone: the caller's read fails and says so
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	if filepath.Base(argv0) != initName {
		return pid
	}
	// The init is a Go program: the thread that forked the JVM may be any
	// of its threads, and children lists each thread's own.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		children, _ := os.ReadFile(t)
		if f := strings.Fields(string(children)); len(f) > 0 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 0
}

// initName is the container init's argv[0] base name (shim.InitPath).
var initName = filepath.Base(shim.InitPath)
