package task

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/drivers"
	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// pollInterval is how often a recovered handle checks whether its shim is
// still alive (it is not our child, so we cannot wait(2) for it).
const pollInterval = 250 * time.Millisecond

// initStartTimeout bounds awaitInit: the Go runtime of the container's init
// starts in about 20 ms natively, under a second in an emulated VM.
const initStartTimeout = 10 * time.Second

// Handle is one live task: its persisted state plus the watcher that turns
// the shim's exit into an ExitResult.
type Handle struct {
	State  State
	Config *drivers.TaskConfig
	CLI    *crun.CLI

	logger hclog.Logger
	done   chan struct{}

	mu          sync.Mutex
	exit        *drivers.ExitResult
	completedAt time.Time
}

// NewHandle is the start-time constructor: the plugin is the shim's parent
// and waits on it directly.
func NewHandle(state State, cfg *drivers.TaskConfig, cli *crun.CLI, shimCmd *exec.Cmd, logger hclog.Logger) *Handle {
	h := newHandle(state, cfg, cli, logger)
	go h.watch(func() { _ = shimCmd.Wait() })
	return h
}

// RecoverHandle is the recovery constructor: a new plugin process polls the
// shim it did not start.
func RecoverHandle(state State, cfg *drivers.TaskConfig, cli *crun.CLI, logger hclog.Logger) *Handle {
	h := newHandle(state, cfg, cli, logger)
	go h.watch(h.pollShim)
	return h
}

func newHandle(state State, cfg *drivers.TaskConfig, cli *crun.CLI, logger hclog.Logger) *Handle {
	return &Handle{
		State:  state,
		Config: cfg,
		CLI:    cli,
		logger: logger.With("container_id", state.ContainerID),
		done:   make(chan struct{}),
	}
}

// Done is closed when the container has exited and ExitResult is set.
func (h *Handle) Done() <-chan struct{} { return h.done }

// IsRunning reports whether the container has not exited yet.
func (h *Handle) IsRunning() bool {
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

// ExitResult is nil while the container runs.
func (h *Handle) ExitResult() *drivers.ExitResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exit.Copy()
}

// Status is InspectTask's answer.
func (h *Handle) Status() *drivers.TaskStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := &drivers.TaskStatus{
		ID:        h.Config.ID,
		Name:      h.Config.Name,
		State:     drivers.TaskStateRunning,
		StartedAt: h.State.StartedAt,
		DriverAttributes: map[string]string{
			"container_id": h.State.ContainerID,
			"bundle":       h.State.BundleDir,
			"pid":          fmt.Sprint(h.State.ContainerPID),
		},
	}
	if h.exit != nil {
		st.State = drivers.TaskStateExited
		st.CompletedAt = h.completedAt
		st.ExitResult = h.exit.Copy()
	}
	return st
}

// Signal delivers sig (canonical, e.g. "SIGHUP") to the container's init.
func (h *Handle) Signal(ctx context.Context, sig string) error {
	if !h.IsRunning() {
		return fmt.Errorf("task %s has exited: cannot deliver %s", h.Config.Name, sig)
	}
	h.awaitInit()
	// Noted first, so that the shim can tell "exited 143 after our SIGTERM"
	// from "chose exit code 143" (see shim.Classify).
	if num := unix.SignalNum(sig); num != 0 {
		if err := shim.RecordSignal(h.State.BundleDir, int(num)); err != nil {
			h.logger.Warn("signal not recorded; an exit with 128+signal will be reported as a plain exit code", "signal", sig, "error", err)
		}
	}
	if sig == "SIGSTOP" {
		if jvm := jvmPID(h.State.ContainerPID); jvm > 0 && jvm != h.State.ContainerPID {
			// SIGSTOP cannot be caught, so the init cannot forward it: sent
			// to the init it stopped the init alone. Sent to the JVM, as
			// `kill -STOP` would outside a container; the SIGCONT that
			// follows goes through the init, which forwards it.
			return h.stopJVM(jvm)
		}
	}
	err := h.CLI.Kill(ctx, h.State.ContainerID, sig)
	if err != nil && h.exitedSoon() {
		return nil // it ended meanwhile: nothing left to signal
	}
	return err
}

// stopJVM sends SIGSTOP to the JVM (a host pid, the init's child).
func (h *Handle) stopJVM(jvm int) error {
	if err := unix.Kill(jvm, unix.SIGSTOP); err != nil {
		if h.exitedSoon() {
			return nil // it ended meanwhile: nothing left to stop
		}
		return fmt.Errorf("send SIGSTOP to the JVM of %s (pid %d): %w", h.Config.Name, jvm, err)
	}
	return nil
}

// awaitInit holds a signal until the container's init has started the JVM:
// from then on the init forwards every signal, so one sent during the JVM's
// start-up reaches it. Before, the init is a Go runtime still starting,
// which would drop it (or exit on SIGTERM). Bounded: the init forks the JVM
// within milliseconds of its start.
func (h *Handle) awaitInit() {
	pid := h.State.ContainerPID
	deadline := time.Now().Add(initStartTimeout)
	for pid > 0 && jvmPID(pid) == 0 && time.Now().Before(deadline) {
		select {
		case <-h.done:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop delivers sig once the task can receive it, waits until timeout
// (counted from the call) for the container to exit, then kills it through
// crun. The crun process itself is never signalled: that would orphan the
// container.
func (h *Handle) Stop(ctx context.Context, sig string, timeout time.Duration) error {
	if !h.IsRunning() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	if num := unix.SignalNum(sig); num != 0 {
		waited, caught := h.awaitHandler(num, deadline)
		if waited >= handlerPollInterval {
			h.logger.Info("held the stop signal until the task could catch it", "signal", sig,
				"waited", waited.Round(time.Millisecond), "handler_installed", caught)
		}
	}
	if err := h.Signal(ctx, sig); err != nil {
		h.logger.Warn("stop signal failed, killing", "signal", sig, "error", err)
	} else {
		select {
		case <-h.done:
			return nil
		case <-time.After(time.Until(deadline)):
			h.logger.Info("task did not exit in time, killing", "signal", sig, "timeout", timeout)
		}
	}
	return h.Kill(ctx)
}

// Kill sends SIGKILL and waits for the shim to record the exit.
func (h *Handle) Kill(ctx context.Context) error {
	if !h.IsRunning() {
		return nil
	}
	if err := h.CLI.Kill(ctx, h.State.ContainerID, "SIGKILL"); err != nil && !h.exitedSoon() {
		return fmt.Errorf("kill container %s: %w", h.State.ContainerID, err)
	}
	select {
	case <-h.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("container %s did not exit 30s after SIGKILL", h.State.ContainerID)
	}
}

// exitedSoon absorbs the race between a container exiting and a signal sent
// to it: crun then fails because the container is gone.
func (h *Handle) exitedSoon() bool {
	select {
	case <-h.done:
		return true
	case <-time.After(2 * time.Second):
		return false
	}
}

func (h *Handle) watch(waitShim func()) {
	waitShim()
	result := h.collect()
	h.mu.Lock()
	h.exit = result
	h.completedAt = time.Now()
	h.mu.Unlock()
	close(h.done)
	h.logger.Debug("container exited", "exit_code", result.ExitCode, "signal", result.Signal, "oom_killed", result.OOMKilled, "error", result.Err)
}

func (h *Handle) pollShim() {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for shim.Alive(h.State.ShimPID, h.State.ShimStartTicks) {
		<-t.C
	}
}

// collect reads the shim's exit record; without one, the shim died or the
// bundle vanished, and the result says so instead of inventing an exit code.
func (h *Handle) collect() *drivers.ExitResult {
	e, err := shim.ReadExit(h.State.BundleDir)
	if err == nil {
		r := &drivers.ExitResult{ExitCode: e.ExitCode, Signal: e.Signal, OOMKilled: e.OOMKilled}
		switch {
		case e.CrunError != "":
			r.Err = errors.New(e.CrunError)
		case e.Err != "":
			r.Err = errors.New(e.Err)
		case h.Config != nil:
			if crash := jvmCrash(e.Signal, h.Config.TaskDir().LocalDir, h.Config.AllocID, h.Config.Name, h.State.StartedAt); crash != nil {
				r.Err = crash
			}
		}
		return r
	}
	ctx := context.Background()
	if st, serr := h.CLI.State(ctx, h.State.ContainerID); serr == nil && st.Status != "stopped" {
		// The shim died but the container lives on: wait for it to end.
		h.logger.Warn("container supervisor died; waiting for the container without an exit code", "pid", st.Pid)
		t := time.NewTicker(time.Second)
		for {
			st, serr = h.CLI.State(ctx, h.State.ContainerID)
			if serr != nil || st.Status == "stopped" {
				break
			}
			<-t.C
		}
		t.Stop()
		return &drivers.ExitResult{ExitCode: -1, Err: fmt.Errorf(
			"container %s exited after its supervisor died: exit code unknown", h.State.ContainerID)}
	}
	return &drivers.ExitResult{ExitCode: -1, Err: fmt.Errorf(
		"container %s vanished: no exit status in %s (%v)", h.State.ContainerID, h.State.BundleDir, err)}
}
