package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// recover re-attaches to a task started by an earlier plugin process. The
// container may still run (its shim is alive), may have ended while the
// plugin was down (exit.json says how), or may have vanished: then the task
// is cleaned up and the error makes Nomad restart it.
func (d *Driver) recover(cfg *drivers.TaskConfig, state task.State) (*task.Handle, error) {
	cli := d.cli(state.CrunPath, state.CrunRoot)
	logger := d.logger.With("task_id", cfg.ID)

	if shim.Alive(state.ShimPID, state.ShimStartTicks) {
		logger.Info("re-attached to running container", "container_id", state.ContainerID, "shim_pid", state.ShimPID)
		return task.RecoverHandle(state, cfg, cli, d.logger), nil
	}
	if _, err := os.Stat(filepath.Join(state.BundleDir, shim.ExitFile)); err == nil {
		logger.Info("container ended while the plugin was down", "container_id", state.ContainerID)
		return task.RecoverHandle(state, cfg, cli, d.logger), nil
	}
	st, err := cli.State(context.Background(), state.ContainerID)
	if err == nil && st.Status != "stopped" {
		logger.Warn("container runs without its supervisor; its exit code will be unknown", "container_id", state.ContainerID)
		return task.RecoverHandle(state, cfg, cli, d.logger), nil
	}
	if err != nil && !errors.Is(err, crun.ErrNotExist) {
		return nil, fmt.Errorf("recover task %s: %w", cfg.ID, err)
	}
	_ = d.removeContainer(state, cli)
	return nil, fmt.Errorf("recover task %s: container %s vanished while the plugin was down (no supervisor, no crun state, no exit status in %s)",
		cfg.ID, state.ContainerID, state.BundleDir)
}
