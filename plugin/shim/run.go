package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// MaybeRun turns this process into a shim when it was launched as one, and
// never returns then. main() and test binaries call it first.
func MaybeRun() {
	if os.Getenv(envMarker) != "1" {
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "java-crun shim: usage: <binary> BUNDLE_DIR (with "+envMarker+"=1)")
		os.Exit(2)
	}
	os.Exit(run(os.Args[1]))
}

// Launch starts a detached shim for the bundle with the container's stdout
// and stderr. The caller must Wait() on the returned command to reap it.
func Launch(bundle string, stdout, stderr *os.File) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locate the driver binary to launch its shim: %w", err)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()

	cmd := exec.Command(self, bundle)
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
	cli := &crun.CLI{Path: cfg.CrunPath, Root: cfg.CrunRoot}
	logPath := filepath.Join(bundle, CrunRunLog)
	cmd := cli.RunCommand(cfg.ContainerID, bundle, logPath)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	runErr := cmd.Run()

	exit := &Exit{FinishedAt: time.Now().UTC()}
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &exitErr):
		status := exitErr.Sys().(syscall.WaitStatus)
		if status.Signaled() {
			// crun itself was killed: the container may live on unsupervised.
			exit.ExitCode, exit.Signal = -1, int(status.Signal())
			exit.Err = fmt.Sprintf("crun run was killed by %v; the container's exit code is unknown", status.Signal())
		} else {
			exit.ExitCode = status.ExitStatus()
		}
	default:
		exit.ExitCode = -1
		exit.Err = fmt.Sprintf("cannot run crun: %v", runErr)
	}
	if exit.ExitCode > 128 && exit.ExitCode <= 128+64 {
		// crun run exits 128+N when the container's init died of signal N.
		exit.Signal = exit.ExitCode - 128
	}
	if msgs := crun.ReadErrorMessages(logPath); exit.ExitCode != 0 && len(msgs) > 0 {
		exit.CrunError = "crun: " + strings.Join(msgs, "; ")
	}
	exit.OOMKilled = oomKills(cfg.CgroupDir) > oomBefore
	if err := writeJSON(filepath.Join(bundle, ExitFile), exit); err != nil {
		logf("record exit: %v", err)
		return 1
	}
	return 0
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
