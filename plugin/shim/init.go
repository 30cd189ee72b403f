package shim

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The container's PID 1 is this binary in init mode, bind-mounted read-only
// at InitPath, with java as its only child. Why not the JVM itself: the
// kernel drops every signal sent to a PID namespace's init that has no
// handler for it, so a `nomad alloc signal` of SIGUSR1, or a SIGTERM during
// the JVM's first second (before it installs its handlers), did nothing
// while reporting success; and nobody reaped the orphans of processes the
// JVM starts. The init catches every catchable signal and forwards it, so
// the JVM gets it as it would outside a container, and it reaps every
// orphan.
const (
	// InitPath is where the init is mounted in the container.
	InitPath = "/.java-crun/" + initName
	initName = "java-crun-init"
	// initStatusFd is the pipe the shim passes through `crun run
	// --preserve-fds=1`: the init writes the JVM's raw wait status to it.
	// The init itself cannot die by the JVM's signal (the kernel protects a
	// namespace's init from its own signals), so its exit code alone could
	// not tell "killed by SIGTERM" from "exit(143)".
	initStatusFd = 3
)

// The init's Go runtime runs without asynchronous preemption: that signals
// its own threads with SIGURG, and the signal.Notify of every signal below
// would forward those SIGURGs, which nobody sent, to the JVM. GODEBUG is
// read before any of the init's code runs, so it comes with the
// container's environment, marked so that the init drops it again for the
// JVM. A task that sets GODEBUG itself keeps its own: its init may then
// forward such a SIGURG (a JVM ignores it unless the app handles SIGURG).
const (
	initGodebug       = "GODEBUG=asyncpreemptoff=1"
	initGodebugMarker = "JAVA_CRUN_INIT_GODEBUG=1"
)

// InitEnv is the container process's environment for the task environment
// env: the init passes env itself, unchanged, to the JVM.
func InitEnv(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GODEBUG=") {
			return env
		}
	}
	return append(env[:len(env):len(env)], initGodebug, initGodebugMarker)
}

// jvmEnv is the init's environment without what InitEnv added for it.
func jvmEnv(env []string) []string {
	if !slices.Contains(env, initGodebugMarker) {
		return env
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if kv != initGodebug && kv != initGodebugMarker {
			out = append(out, kv)
		}
	}
	return out
}

// maybeRunInit runs the init and exits when this process was started as it
// (argv[0] is InitPath); argv[1:] is the JVM's command line.
func maybeRunInit() {
	if filepath.Base(os.Args[0]) != initName {
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "java-crun-init: usage: java-crun-init PROGRAM [ARGS...]")
		os.Exit(2)
	}
	os.Exit(runInit(os.Args[1:]))
}

func runInit(argv []string) int {
	status := statusPipe()
	// Not dumpable: a task running as the same uid cannot open
	// /proc/1/fd/3 and forge the JVM's exit status.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	// PID 1 of a namespace gets the orphans anyway; as a subreaper, the
	// init also gets them where it is not PID 1 (its unit tests).
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	// Every signal, before the child exists: one that arrives while the JVM
	// is being started waits in the channel and is forwarded right after.
	sigs := make(chan os.Signal, 128)
	signal.Notify(sigs)

	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Env:   jvmEnv(os.Environ()),
		Files: []uintptr{0, 1, 2}, // the status pipe is close-on-exec
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "java-crun-init: cannot start %s: %v\n", argv[0], err)
		if err == syscall.ENOENT {
			return 127
		}
		return 126 // as a shell reports a command found but not runnable
	}
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			// ESRCH: the child just died; its SIGCHLD is on the way.
			_ = syscall.Kill(pid, sig.(syscall.Signal))
			continue
		}
		if ws, done := reapChildren(pid); done {
			report(status, ws)
			return exitCodeOf(ws)
		}
	}
	return 1 // unreachable: the channel is never closed
}

// reapChildren reaps every exited child (orphans re-parented to PID 1
// included) and reports the JVM's status once it is among them.
func reapChildren(jvm int) (unix.WaitStatus, bool) {
	var jvmStatus unix.WaitStatus
	found := false
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || got <= 0 {
			return jvmStatus, found
		}
		if got == jvm {
			jvmStatus, found = ws, true
		}
	}
}

// exitCodeOf is the shell's convention; the shim learns the truth through
// the status pipe.
func exitCodeOf(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return signalExitBase + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// statusPipe returns fd 3 when the shim passed a pipe there, else nil (the
// init run by hand, or by a plain `crun run`).
func statusPipe() *os.File {
	var st unix.Stat_t
	if err := unix.Fstat(initStatusFd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	syscall.CloseOnExec(initStatusFd)
	return os.NewFile(initStatusFd, "java-crun-init-status")
}

func report(status *os.File, ws unix.WaitStatus) {
	if status == nil {
		return
	}
	_, _ = status.WriteString(strconv.Itoa(int(ws)) + "\n")
	_ = status.Close()
}

// ParseInitStatus reads what the init wrote: the JVM's raw wait status.
func ParseInitStatus(data []byte) (unix.WaitStatus, bool) {
	n, err := strconv.Atoi(string(trimNewline(data)))
	if err != nil {
		return 0, false
	}
	return unix.WaitStatus(n), true
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
