// Package crun wraps the crun binary and builds OCI specs for it.
//
// Every call passes --root explicitly (crun's default depends on
// XDG_RUNTIME_DIR) and --log with --log-format=json, so that crun's own
// failures are told apart from the container's exit code.
package crun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout bounds one crun invocation when CLI.Timeout is unset. crun
// answers state/kill/delete in milliseconds and starts a container in about
// a second under emulation; a crun that takes longer is hung (a stuck
// filesystem, a cgroup that will not die), and the driver must not hang
// with it.
const DefaultTimeout = 30 * time.Second

// ErrNotExist is returned by State for a container crun does not know.
var ErrNotExist = errors.New("container does not exist")

// Error is a failed crun invocation; Msg comes from crun's JSON log when it
// wrote one, else from its stderr.
type Error struct {
	Args     []string
	ExitCode int
	Msg      string
	TimedOut bool // crun did not return within the deadline and was killed
}

func (e *Error) Error() string { return "crun: " + e.Msg }

// CLI runs one crun binary against one state root.
type CLI struct {
	Path    string        // crun executable
	Root    string        // state directory, passed as --root
	Timeout time.Duration // deadline of each call; 0 = DefaultTimeout
}

// Deadline is the bound of one crun call.
func (c *CLI) Deadline() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// TimeoutError names the crun command that hung, so that an operator can
// find what is stuck on the node.
func (c *CLI) TimeoutError(args []string) *Error {
	return &Error{Args: args, ExitCode: -1, TimedOut: true, Msg: fmt.Sprintf(
		"`%s --root %s %s` did not return within %s and was killed: crun is hung on this node (check the state root, stuck mounts or cgroups); raise crun_timeout in the plugin config if crun is just slow",
		c.Path, c.Root, strings.Join(args, " "), c.Deadline())}
}

// State is the subset of `crun state` that the driver uses.
type State struct {
	ID      string `json:"id"`
	Pid     int    `json:"pid"`
	Status  string `json:"status"` // creating, created, running, stopped, paused
	Bundle  string `json:"bundle"`
	Created string `json:"created"`
}

// globalArgs are the flags that precede every crun sub-command.
func (c *CLI) globalArgs(logPath string) []string {
	return []string{"--root", c.Root, "--log", logPath, "--log-format=json"}
}

// RunDetachedCommand returns `crun run --detach` for the container: crun
// starts it, writes its host pid to pidFile and exits; the caller wires the
// container's stdio (crun passes its own on) and, as a child subreaper,
// inherits the container's init (see package shim). preserveFDs > 0 passes
// the caller's ExtraFiles on to the container (fd 3 onwards). ctx should
// carry the crun deadline.
func (c *CLI) RunDetachedCommand(ctx context.Context, id, bundle, logPath, pidFile string, preserveFDs int) *exec.Cmd {
	args := append(c.globalArgs(logPath), "run", "--detach", "--pid-file", pidFile)
	if preserveFDs > 0 {
		args = append(args, fmt.Sprintf("--preserve-fds=%d", preserveFDs))
	}
	args = append(args, "--bundle", bundle, id)
	cmd := exec.CommandContext(ctx, c.Path, args...)
	cmd.WaitDelay = time.Second
	return cmd
}

// ExecOptions are `crun exec` flags.
type ExecOptions struct {
	Cwd string
	// ProcessFile, when set, is an OCI process.json (`crun exec --process`):
	// the exec'd process's user, capabilities, no_new_privs, env, cwd and
	// terminal come from it, and Cwd and TTY are not passed as flags.
	ProcessFile string
	PidFile     string // crun writes the exec'd process's host pid here
	// ConsoleSocket, with TTY, is the unix socket crun sends the pty
	// master to (SCM_RIGHTS).
	TTY           bool
	ConsoleSocket string
}

// ExecCommand returns `crun exec` of argv in the running container. It has
// no deadline of its own: the exec'd command lives as long as its caller
// wants (an interactive `nomad alloc exec`), bounded by ctx.
func (c *CLI) ExecCommand(ctx context.Context, id, logPath string, o ExecOptions, argv []string) *exec.Cmd {
	args := append(c.globalArgs(logPath), "exec")
	if o.ProcessFile != "" {
		args = append(args, "--process", o.ProcessFile)
	} else {
		args = append(args, "--cwd", o.Cwd)
	}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.TTY && o.ProcessFile == "" {
		args = append(args, "--tty")
	}
	if o.TTY {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	args = append(args, id)
	if o.ProcessFile == "" {
		args = append(args, argv...)
	}
	return exec.CommandContext(ctx, c.Path, args...)
}

// Kill delivers signal (a canonical name such as "SIGTERM", or a number)
// to the container's init process.
func (c *CLI) Kill(ctx context.Context, id, signal string) error {
	_, err := c.call(ctx, "kill", id, signal)
	return err
}

// Delete removes the container; with force a running container is killed
// first. Deleting an unknown container succeeds.
func (c *CLI) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	_, err := c.call(ctx, append(args, id)...)
	return err
}

// State returns the container's state, or ErrNotExist.
func (c *CLI) State(ctx context.Context, id string) (*State, error) {
	if _, err := os.Stat(filepath.Join(c.Root, id)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotExist)
	}
	out, err := c.call(ctx, "state", id)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) && looksMissing(ce.Msg) {
			return nil, fmt.Errorf("%s: %w", id, ErrNotExist)
		}
		return nil, err
	}
	var s State
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("crun state %s: cannot parse output %q: %w", id, out, err)
	}
	return &s, nil
}

// List returns the IDs of all containers under the state root.
func (c *CLI) List(ctx context.Context) ([]string, error) {
	out, err := c.call(ctx, "list", "-q")
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// Version returns the first line of `crun --version`, e.g. "crun version 1.8.1".
func Version(ctx context.Context, path string) (string, error) {
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // a probe dies with the plugin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", path, err, firstLine(string(out)))
	}
	line := firstLine(string(out))
	return strings.TrimSpace(strings.TrimPrefix(line, "crun version")), nil
}

func (c *CLI) call(ctx context.Context, args ...string) ([]byte, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.Deadline())
	defer cancel()
	// The log lives outside the state root: reading state must not create it.
	logFile, err := os.CreateTemp("", "java-crun-cli-*.log")
	if err != nil {
		return nil, fmt.Errorf("crun log file: %w", err)
	}
	logPath := logFile.Name()
	_ = logFile.Close()
	defer os.Remove(logPath)

	full := append(c.globalArgs(logPath), args...)
	cmd := exec.CommandContext(ctx, c.Path, full...)
	// A child crun left behind holding our pipes must not hold us either.
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if runErr == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil && parent.Err() == nil {
		return nil, c.TimeoutError(args)
	}
	e := &Error{Args: args, ExitCode: -1}
	var exitErr *exec.ExitError
	if errors.As(runErr, &exitErr) {
		e.ExitCode = exitErr.ExitCode()
	}
	switch msgs := ReadErrorMessages(logPath); {
	case len(msgs) > 0:
		e.Msg = strings.Join(msgs, "; ")
	case strings.TrimSpace(stderr.String()) != "":
		e.Msg = strings.TrimSpace(stderr.String())
	default:
		e.Msg = fmt.Sprintf("%s %s: %v", filepath.Base(c.Path), strings.Join(args, " "), runErr)
	}
	return nil, e
}

func looksMissing(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "does not exist") || strings.Contains(m, "no such file")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}
