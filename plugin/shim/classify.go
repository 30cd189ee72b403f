package shim

import (
	"slices"

	"golang.org/x/sys/unix"
)

// signalExitBase is the shell's (and Nomad's) convention: a process killed
// by signal N is reported with exit code 128+N.
const signalExitBase = 128

// Classify turns the container init's real wait status into Nomad's exit
// code and signal:
//
//   - killed by signal N (the kernel's word: OOM kill, SIGKILL, an unhandled
//     SIGTERM): exit code 128+N, signal N;
//   - exited with code C: exit code C, signal 0, even for C in 129..192: an
//     app may choose such a code, and crun's own "128+N" cannot be told apart
//     from it, which is why the shim reaps the init itself;
//   - except: exited with 128+N after the driver delivered signal N (sent).
//     That is how a JVM ends on a signal it handles: on SIGTERM, SIGINT or
//     SIGHUP it runs its shutdown hooks and exits 128+N by itself. The task
//     was stopped by that signal, so it is reported as signal N, as before.
func Classify(ws unix.WaitStatus, sent []int) (exitCode, signal int) {
	switch {
	case ws.Signaled():
		return signalExitBase + int(ws.Signal()), int(ws.Signal())
	case ws.Exited():
		code := ws.ExitStatus()
		if n := code - signalExitBase; n > 0 && n <= 64 && slices.Contains(sent, n) {
			return code, n
		}
		return code, 0
	default: // stopped or continued: wait4 without WUNTRACED never returns these
		return -1, 0
	}
}
