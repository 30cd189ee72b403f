package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
)

// execTask runs argv in the task's container via `crun exec` and captures
// its output (used by script checks).
func execTask(ctx context.Context, h *task.Handle, argv []string, timeout time.Duration) (*drivers.ExecTaskResult, error) {
	if len(argv) == 0 {
		return nil, errors.New("exec: empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code, err := runExec(ctx, h, argv, nil, &stdout, &stderr)
	if err != nil {
		return nil, err
	}
	return &drivers.ExecTaskResult{
		Stdout: stdout.Bytes(), Stderr: stderr.Bytes(),
		ExitResult: &drivers.ExitResult{ExitCode: code},
	}, nil
}

// execTaskStreaming backs `nomad alloc exec`; a TTY is not supported.
func execTaskStreaming(ctx context.Context, h *task.Handle, opts *drivers.ExecOptions) (*drivers.ExitResult, error) {
	if opts.Tty {
		return nil, errors.New("java-crun exec does not support a TTY: run `nomad alloc exec -t=false ...`")
	}
	if len(opts.Command) == 0 {
		return nil, errors.New("exec: empty command")
	}
	code, err := runExec(ctx, h, opts.Command, opts.Stdin, opts.Stdout, opts.Stderr)
	if err != nil {
		return nil, err
	}
	return &drivers.ExitResult{ExitCode: code}, nil
}

func runExec(ctx context.Context, h *task.Handle, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if !h.IsRunning() {
		return 0, fmt.Errorf("exec: task %s is not running", h.Config.Name)
	}
	logFile, err := os.CreateTemp(h.State.BundleDir, "crun-exec-*.log")
	if err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	logPath := logFile.Name()
	_ = logFile.Close()
	defer os.Remove(logPath)

	cmd := h.CLI.ExecCommand(ctx, h.State.ContainerID, logPath, defaultCwd, argv)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	runErr := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
		return 0, nil
	case errors.As(runErr, &exitErr):
		if msgs := crun.ReadErrorMessages(logPath); len(msgs) > 0 {
			return 0, fmt.Errorf("exec %s: crun: %s", filepath.Base(argv[0]), strings.Join(msgs, "; "))
		}
		return exitErr.ExitCode(), nil
	default:
		return 0, fmt.Errorf("exec: %w", runErr)
	}
}
