package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// MaybeRun turns this process into a shim when it was launched as one, and
// never returns then. main() and test binaries call it first.
func MaybeRun() {
	maybeRunInit()
	if os.Getenv(envMarker) != "1" {
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "java-crun shim: usage: <binary> BUNDLE_DIR (with "+envMarker+"=1)")
		os.Exit(2)
	}
	os.Exit(run(os.Args[1]))
}

// Launch starts binary (see FindBinary) as a detached shim for the bundle
// with the container's stdout and stderr. The caller must Wait() on the
// returned command to reap it.
func Launch(binary, bundle string, stdout, stderr *os.File) (*exec.Cmd, error) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()

	cmd := exec.Command(binary, bundle)
	cmd.Env = []string{envMarker + "=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, stdout, stderr
	// Own session: signals to the plugin's process group never reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shim for %s: %w", bundle, err)
	}
	return cmd, nil
}

// run supervises one container and records how it ended.
//
// How the shim learns the truth about the exit: a foreground `crun run`
// reaps the container's init itself and exits 128+N when the init was
// killed by signal N, which cannot be told apart from an app calling
// exit(128+N). So the shim makes itself a child subreaper and runs
// `crun run --detach`: crun starts the container, writes the init's pid to
// container.pid and exits. The init, orphaned by crun, is re-parented to the
// nearest subreaper, the shim, which reaps it with wait4 and so reads its
// real wait status (exited with C, or killed by N). Containerd's shims and
// conmon use the same construction. The JVM stays PID 1 of the container:
// nothing of ours runs inside it.
func run(bundle string) int {
	logf := shimLogger(bundle)
	cfg, err := ReadConfig(bundle)
	if err != nil {
		logf("read config: %v", err)
		return 1
	}
	// Catch (not ignore) terminal signals: a caught signal is reset to default
	// in the exec'd crun and container, an ignored one would be inherited and
	// stop the JVM from running its shutdown hooks.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE)
	go func() {
		for s := range sigs {
			logf("ignored %v: stop the container with crun kill", s)
		}
	}()

	oomBefore := oomKills(cfg.CgroupDir)
	exit := supervise(cfg, bundle, logf)
	exit.FinishedAt = time.Now().UTC()
	exit.OOMKilled = oomKills(cfg.CgroupDir) > oomBefore
	if err := writeJSON(filepath.Join(bundle, ExitFile), exit); err != nil {
		logf("record exit: %v", err)
		return 1
	}
	return 0
}

// supervise starts the container, reaps its init and deletes it.
func supervise(cfg *Config, bundle string, logf func(string, ...any)) *Exit {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return &Exit{ExitCode: -1, Err: fmt.Sprintf("cannot become the container's subreaper (prctl PR_SET_CHILD_SUBREAPER): %v", err)}
	}
	cli := &crun.CLI{Path: cfg.CrunPath, Root: cfg.CrunRoot, Timeout: cfg.CrunTimeout}
	logPath := filepath.Join(bundle, CrunRunLog)
	pidPath := filepath.Join(bundle, PidFile)

	// The container's init reports the JVM's wait status through this pipe
	// (see init.go); crun passes its write end on as fd 3.
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return &Exit{ExitCode: -1, Err: fmt.Sprintf("status pipe for the container's init: %v", err)}
	}
	defer statusR.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cli.Deadline())
	cmd := cli.RunDetachedCommand(ctx, cfg.ContainerID, bundle, logPath, pidPath, 1)
	// crun passes its stdio on to the container: Nomad's log FIFOs.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{statusW}
	runErr := cmd.Run()
	timedOut := ctx.Err() != nil
	cancel()
	_ = statusW.Close()
	if runErr != nil {
		reapOrphans() // crun's helper processes, re-parented to us
		return crunRunFailed(cli, cfg.ContainerID, runErr, timedOut, logPath)
	}

	pid, err := readPid(pidPath)
	if err != nil {
		return &Exit{ExitCode: -1, Err: fmt.Sprintf("crun started container %s but its pid is unknown: %v", cfg.ContainerID, err)}
	}
	if err := writeJSON(filepath.Join(bundle, StartedFile), &Started{Pid: pid}); err != nil {
		// The driver then times out waiting for the start and stops the
		// container: a bundle that cannot be written loses exit.json too.
		logf("record the start: %v", err)
	}
	ws, err := reap(pid)
	if err != nil {
		return &Exit{ExitCode: -1, Err: fmt.Sprintf("lost container %s (pid %d): %v; its exit code is unknown", cfg.ContainerID, pid, err)}
	}
	exit := &Exit{}
	initRaw := int(ws)
	exit.InitWaitStatus = &initRaw
	if appWS, ok := readInitStatus(statusR); ok {
		ws = appWS // the JVM's own status, as the init saw it
	} else {
		// No report: the init itself was killed (SIGKILL from crun kill or
		// the OOM killer), which kills the JVM with it; its status is the
		// truth then.
		logf("no status from the container's init; using its own wait status %d", initRaw)
	}
	raw := int(ws)
	exit.WaitStatus = &raw
	exit.ExitCode, exit.Signal = Classify(ws, SentSignals(bundle))

	// A detached container stays in crun's state as "stopped"; delete it as
	// a foreground `crun run` would have done. DestroyTask force-deletes
	// anyway, so a failure here only leaves work for it.
	dctx, dcancel := context.WithTimeout(context.Background(), cli.Deadline())
	defer dcancel()
	if err := cli.Delete(dctx, cfg.ContainerID, false); err != nil {
		logf("delete exited container: %v", err)
	}
	return exit
}

// crunRunFailed records crun's own failure to start the container: with
// --detach, any non-zero exit of crun is crun's, never the app's.
func crunRunFailed(cli *crun.CLI, id string, runErr error, timedOut bool, logPath string) *Exit {
	exit := &Exit{ExitCode: -1}
	var exitErr *exec.ExitError
	switch {
	case timedOut:
		exit.CrunError = cli.TimeoutError([]string{"run", "--detach", id}).Error()
	case errors.As(runErr, &exitErr):
		exit.ExitCode = exitErr.ExitCode()
		if msgs := crun.ReadErrorMessages(logPath); len(msgs) > 0 {
			exit.CrunError = "crun: " + strings.Join(msgs, "; ")
		} else {
			exit.CrunError = fmt.Sprintf("crun: `crun run --detach %s` failed (%v) without a message in %s", id, runErr, logPath)
		}
	default:
		exit.Err = fmt.Sprintf("cannot run crun: %v", runErr)
	}
	return exit
}

// readInitStatus reads the JVM's wait status that the init wrote before it
// exited. The init is reaped by now, so the pipe is at EOF; the deadline
// guards against a process that inherited the write end by mistake.
func readInitStatus(r *os.File) (unix.WaitStatus, bool) {
	_ = r.SetReadDeadline(time.Now().Add(time.Second))
	data, _ := io.ReadAll(r)
	return ParseInitStatus(data)
}

// reap waits for pid, reaping whatever else was re-parented to the shim
// meanwhile (crun's intermediate processes).
func reap(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, fmt.Errorf("wait4: %w (the container's init was not re-parented to the shim)", err)
		case got == pid:
			reapOrphans()
			return ws, nil
		}
	}
}

// reapOrphans collects exited children without blocking.
func reapOrphans() {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || got <= 0 {
			return
		}
	}
}

func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s holds %q, not a pid", path, data)
	}
	return pid, nil
}

// oomKills reads the oom_kill counter of the cgroup's memory.events, which
// is hierarchical: it counts kills in the container's child cgroup too.
func oomKills(cgroupDir string) uint64 {
	if cgroupDir == "" {
		return 0
	}
	data, err := os.ReadFile(filepath.Join(cgroupDir, "memory.events"))
	if err != nil {
		return 0
	}
	return ParseOOMKills(data)
}

// ParseOOMKills returns the oom_kill value of a memory.events file.
func ParseOOMKills(data []byte) uint64 {
	for _, line := range bytes.Split(data, []byte("\n")) {
		fields := bytes.Fields(line)
		if len(fields) == 2 && string(fields[0]) == "oom_kill" {
			n, _ := strconv.ParseUint(string(fields[1]), 10, 64)
			return n
		}
	}
	return 0
}

func shimLogger(bundle string) func(string, ...any) {
	return func(format string, args ...any) {
		f, err := os.OpenFile(filepath.Join(bundle, ShimLogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
	}
}
