package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
)

// execOutputGrace is how long an exec waits, once its command has ended,
// for the command's output to drain. A background process the command left
// behind may hold stdout open for ever; its later output is dropped.
const execOutputGrace = 2 * time.Second

// execTask runs argv in the task's container via `crun exec` and captures
// its output (used by script checks).
func execTask(ctx context.Context, h *task.Handle, argv []string, timeout time.Duration) (*drivers.ExecTaskResult, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code, err := runExec(ctx, h, &drivers.ExecOptions{Command: argv, Stdout: nopWriteCloser{&stdout}, Stderr: nopWriteCloser{&stderr}})
	if err != nil {
		return nil, err
	}
	return &drivers.ExecTaskResult{
		Stdout: stdout.Bytes(), Stderr: stderr.Bytes(),
		ExitResult: &drivers.ExitResult{ExitCode: code},
	}, nil
}

// execTaskStreaming backs `nomad alloc exec`, with or without a TTY. It
// returns as soon as the command ends, whatever Nomad's stdin does: the
// client keeps that stream open until the user's terminal closes it.
func execTaskStreaming(ctx context.Context, h *task.Handle, opts *drivers.ExecOptions) (*drivers.ExitResult, error) {
	if len(opts.Command) == 0 {
		return nil, errors.New("exec: empty command")
	}
	code, err := runExec(ctx, h, opts)
	if err != nil {
		return nil, err
	}
	return &drivers.ExitResult{ExitCode: code}, nil
}

func runExec(ctx context.Context, h *task.Handle, opts *drivers.ExecOptions) (int, error) {
	if !h.IsRunning() {
		return 0, fmt.Errorf("exec: task %s is not running", h.Config.Name)
	}
	dir, err := os.MkdirTemp(h.State.BundleDir, "exec-")
	if err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	defer os.RemoveAll(dir)
	logPath, pidPath := filepath.Join(dir, "crun.log"), filepath.Join(dir, "pid")

	var tty *ttySession
	o := crun.ExecOptions{Cwd: defaultCwd, PidFile: pidPath, TTY: opts.Tty}
	if o.ProcessFile, err = writeExecProcess(h.State.BundleDir, dir, opts); err != nil {
		return 0, err
	}
	if opts.Tty {
		if tty, err = listenConsole(); err != nil {
			return 0, err
		}
		defer tty.close()
		o.ConsoleSocket = tty.socketPath
	}
	cmd := h.CLI.ExecCommand(ctx, h.State.ContainerID, logPath, o, opts.Command)
	// On cancel (ExecTask's timeout, the user's Ctrl-C on the stream), kill
	// the exec'd process, not crun: a killed crun would orphan it in the
	// container. crun then returns by itself; WaitDelay bounds that.
	cmd.Cancel = func() error { return killExecProcess(pidPath, h.State.ContainerCgroup, cmd) }
	cmd.WaitDelay = execOutputGrace

	if tty != nil {
		return tty.run(ctx, cmd, opts, logPath, h.CLI.Deadline())
	}
	// Stdin through a pipe of our own: handed a plain io.Reader, os/exec's
	// Wait would wait for the stdin copy to end, i.e. for Nomad to close
	// stdin, which it does not do before the command has ended.
	var stdinW *os.File
	if opts.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, fmt.Errorf("exec: stdin pipe: %w", err)
		}
		cmd.Stdin, stdinW = r, w
		defer r.Close()
	}
	cmd.Stdout, cmd.Stderr = writerOrDiscard(opts.Stdout), writerOrDiscard(opts.Stderr)
	if err := cmd.Start(); err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return 0, fmt.Errorf("exec: %w", err)
	}
	if stdinW != nil {
		cmd.Stdin.(*os.File).Close() // the child has its copy
		go func() {
			_, _ = io.Copy(stdinW, opts.Stdin)
			stdinW.Close() // EOF for the command when the user closes stdin
		}()
		// Once the command ended, stop the copy: closing the write end
		// fails its next write, closing Nomad's reader ends its pending
		// read (Nomad's own executor closes it the same way).
		defer func() { stdinW.Close(); _ = opts.Stdin.Close() }()
	}
	return execResult(cmd.Wait(), logPath, opts.Command)
}

// writeExecProcess writes dir/process.json for `crun exec --process`: the
// task's own process (its user and groups, capabilities, no_new_privs,
// rlimits, environment) running argv in the task's working directory. Without
// it crun exec runs the command as root with crun's defaults: more privilege
// than the task itself holds.
func writeExecProcess(bundle, dir string, opts *drivers.ExecOptions) (string, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", fmt.Errorf("exec: the task's OCI spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil || spec.Process == nil {
		return "", fmt.Errorf("exec: the task's OCI spec %s/config.json has no process: %v", bundle, err)
	}
	p := *spec.Process
	p.Args, p.Cwd, p.Terminal, p.ConsoleSize = opts.Command, defaultCwd, opts.Tty, nil
	out, err := json.Marshal(&p)
	if err != nil {
		return "", fmt.Errorf("exec: encode process.json: %w", err)
	}
	path := filepath.Join(dir, "process.json")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", fmt.Errorf("exec: %w", err)
	}
	return path, nil
}

// execResult turns crun exec's exit into the command's exit code, or into
// crun's own error when crun wrote one.
func execResult(waitErr error, logPath string, argv []string) (int, error) {
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return 0, nil
	case errors.As(waitErr, &exitErr):
		if msgs := crun.ReadErrorMessages(logPath); len(msgs) > 0 {
			return 0, fmt.Errorf("exec %s: crun: %s", filepath.Base(argv[0]), strings.Join(msgs, "; "))
		}
		return exitErr.ExitCode(), nil
	case errors.Is(waitErr, exec.ErrWaitDelay):
		return 0, nil // exited 0; only a background process kept its output open
	default:
		return 0, fmt.Errorf("exec: %w", waitErr)
	}
}

// killExecProcess SIGKILLs the exec'd process whose pid crun wrote, after
// checking through /proc that the pid still belongs to the container's
// cgroup (not a reused pid). Without a pid yet, crun itself is killed: the
// process has not been started.
func killExecProcess(pidPath, containerCgroup string, cmd *exec.Cmd) error {
	data, err := os.ReadFile(pidPath)
	if err != nil {
		return cmd.Process.Kill()
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return cmd.Process.Kill()
	}
	if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil && containerCgroup != "" &&
		!strings.Contains(string(cg), crunCgroupsPath(containerCgroup)) {
		return nil // the pid is no longer the exec'd process
	}
	return unix.Kill(pid, unix.SIGKILL)
}

func writerOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
