package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/drivers"
	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

const (
	// startTimeout bounds the shim's `crun run --detach` starting the
	// container (1.2 s measured in a TCG-emulated VM).
	startTimeout = 2 * time.Minute
	// startPoll is how often the start is checked: a stat of the started file.
	startPoll   = 10 * time.Millisecond
	fifoTimeout = 30 * time.Second
)

// unrecoverable marks invalid input: Nomad must not restart the task for it.
func unrecoverable(err error) error { return structs.NewRecoverableError(err, false) }

// recoverable marks a transient failure: Nomad applies the restart policy.
func recoverable(err error) error { return structs.NewRecoverableError(err, true) }

// launch builds the bundle, starts the shim and waits until the shim
// records that crun started the container (or that it already exited).
func (d *Driver) launch(cfg *drivers.TaskConfig, tc *TaskConfig, rt runtimeInfo) (*task.Handle, error) {
	u, err := hostUser(d.taskUserName(cfg))
	if err != nil {
		return nil, unrecoverable(err)
	}
	sec, err := taskSecurity(d.config(), tc, filepath.Glob)
	if err != nil {
		return nil, unrecoverable(err)
	}
	shimBinary := d.config().shim.Path
	if shimBinary == "" {
		return nil, recoverable(errors.New("the driver has no configuration yet (SetConfig has not run): cannot locate its shim"))
	}
	id := containerID(cfg)
	d.claim(id)
	cgroupDir := taskCgroup(cfg, id)
	state := task.State{
		ContainerID:     id,
		BundleDir:       filepath.Join(d.config().StateRoot, "bundles", id),
		CrunPath:        rt.CrunPath,
		CrunRoot:        filepath.Join(d.config().StateRoot, "crun"),
		CgroupDir:       cgroupDir,
		ContainerCgroup: filepath.Join(cgroupDir, containerCgroupName),
		StdoutPath:      cfg.StdoutPath,
		StderrPath:      cfg.StderrPath,
	}
	if err := os.MkdirAll(state.BundleDir, 0o700); err != nil {
		return nil, recoverable(fmt.Errorf("create bundle %s: %w", state.BundleDir, err))
	}
	nameBinds, notes, err := nameResolution(state.BundleDir, cfg, hostname(cfg), realNameHost)
	if err != nil {
		_ = os.RemoveAll(state.BundleDir)
		return nil, recoverable(err)
	}
	for _, n := range notes {
		d.taskEvent(cfg, n)
	}
	d.mu.RLock()
	totalCompute := int64(d.compute.TotalCompute)
	d.mu.RUnlock()
	in, specNotes, err := buildSpecInput(cfg, tc, specParams{
		JavaHome:     rt.JavaHome,
		User:         u,
		PidsLimit:    d.config().PidsLimit,
		CgroupsPath:  crunCgroupsPath(state.ContainerCgroup),
		Exists:       func(p string) bool { _, err := os.Stat(p); return err == nil },
		NoFile:       noFileLimit(),
		Security:     sec,
		InitBinary:   shimBinary,
		ExtraBinds:   nameBinds,
		TotalCompute: totalCompute,
		StatDevice:   hostDevice,
	})
	if err != nil {
		return nil, unrecoverable(err)
	}
	for _, n := range specNotes {
		d.taskEvent(cfg, n)
	}
	cli := d.cli(state.CrunPath, state.CrunRoot)
	cleanup := func() { _ = d.removeContainer(state, cli) }

	if err := os.MkdirAll(state.CrunRoot, 0o700); err != nil {
		return nil, recoverable(fmt.Errorf("crun state root: %w", err))
	}
	if err := crun.WriteBundle(state.BundleDir, crun.BuildSpec(in)); err != nil {
		cleanup()
		return nil, recoverable(err)
	}
	if err := prepareTaskCgroup(cgroupDir, in.CpusetCpus); err != nil {
		cleanup()
		return nil, recoverable(err)
	}
	if err := shim.WriteConfig(&shim.Config{
		CrunPath: state.CrunPath, CrunRoot: state.CrunRoot, ContainerID: id,
		Bundle: state.BundleDir, CgroupDir: cgroupDir, CrunTimeout: cli.Deadline(),
	}); err != nil {
		cleanup()
		return nil, recoverable(err)
	}
	stdout, err := openFIFO(cfg.StdoutPath, fifoTimeout)
	if err != nil {
		cleanup()
		return nil, recoverable(err)
	}
	defer stdout.Close()
	stderr, err := openFIFO(cfg.StderrPath, fifoTimeout)
	if err != nil {
		cleanup()
		return nil, recoverable(err)
	}
	defer stderr.Close()

	state.StartedAt = time.Now().UTC()
	cmd, err := shim.Launch(shimBinary, state.BundleDir, stdout, stderr)
	if err != nil {
		cleanup()
		return nil, recoverable(err)
	}
	state.ShimPID = cmd.Process.Pid
	state.ShimStartTicks, _ = shim.StartTicks(cmd.Process.Pid)
	h := task.NewHandle(state, cfg, cli, cmd, d.logger)

	pid, err := waitRunning(d.ctx, h, state.BundleDir, id)
	if err != nil {
		_ = h.Kill(context.Background())
		<-h.Done()
		cleanup()
		return nil, err
	}
	h.State.ContainerPID = pid
	return h, nil
}

// waitRunning waits until the shim records that crun started the container
// (its started file), or that it ended: a crun failure then becomes a
// recoverable "crun: ..." error. A file, not `crun state`: a poll costs a
// stat, not a process while the JVM starts.
func waitRunning(ctx context.Context, h *task.Handle, bundle, id string) (int, error) {
	deadline := time.Now().Add(startTimeout)
	last := "the shim has not recorded a start yet"
	for {
		select {
		case <-h.Done():
			res := h.ExitResult()
			var crash *task.JVMCrash
			if res.Err != nil && !errors.As(res.Err, &crash) {
				return 0, recoverable(fmt.Errorf("start container %s: %w", id, res.Err))
			}
			return 0, nil // ran and exited already (a JVM crash too): WaitTask reports it
		default:
		}
		started, err := shim.ReadStarted(bundle)
		switch {
		case err == nil:
			return started.Pid, nil
		case !errors.Is(err, os.ErrNotExist):
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return 0, recoverable(fmt.Errorf("container %s not running after %s (last: %s)", id, startTimeout, last))
		}
		select {
		case <-h.Done():
		case <-time.After(startPoll):
		case <-ctx.Done():
			return 0, errShuttingDown()
		}
	}
}

// openFIFO opens Nomad's log FIFO for writing without blocking forever when
// no reader is there yet; the descriptor handed on is blocking again.
func openFIFO(path string, timeout time.Duration) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	deadline := time.Now().Add(timeout)
	for {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			if err := unix.SetNonblock(fd, false); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("log fifo %s: %w", path, err)
			}
			return os.NewFile(uintptr(fd), path), nil
		}
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			return nil, fmt.Errorf("open log fifo %s: %w (is the log collector running?)", path, err)
		}
		time.Sleep(20 * time.Millisecond) // ENXIO: no reader yet
	}
}

// removeContainer deletes the container, its bundle and its cgroups; every
// step tolerates what an earlier attempt already removed.
func (d *Driver) removeContainer(state task.State, cli *crun.CLI) error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cli.Delete(ctx, state.ContainerID, true); err != nil {
		if _, serr := cli.State(ctx, state.ContainerID); !errors.Is(serr, crun.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := removeCgroup(state.CgroupDir, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	if filepath.Dir(state.CgroupDir) == ownedCgroupParent {
		_ = os.Remove(ownedCgroupParent) // only succeeds once no other task uses it
	}
	if state.BundleDir != "" {
		// A shim that is just ending may write exit.json meanwhile: retry.
		var err error
		for i := 0; i < 5; i++ {
			if err = os.RemoveAll(state.BundleDir); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove bundle: %w", err))
		}
	}
	return errors.Join(errs...)
}
