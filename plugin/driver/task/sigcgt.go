package task

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
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

// awaitHandler waits until the container's init catches sig, the task ends
// or deadline passes, and reports how long it waited. The JVM is PID 1 of
// its PID namespace, and the kernel drops a signal sent to a namespace's
// init that has no handler for it: a stop in the first second of a JVM's
// life (before Java registers its SIGTERM handler) would otherwise be lost
// and end, kill_timeout later, in SIGKILL instead of a graceful exit.
func (h *Handle) awaitHandler(sig unix.Signal, deadline time.Time) (time.Duration, bool) {
	start := time.Now()
	pid := h.State.ContainerPID
	if pid <= 0 || sig == unix.SIGKILL || sig == unix.SIGSTOP {
		return 0, true // the kernel always delivers these two
	}
	for {
		caught, err := catchesSignal(pid, sig)
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
