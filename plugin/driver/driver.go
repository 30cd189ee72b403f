// Package driver is the java-crun Nomad task driver: it runs a Java program
// from a JAR in a crun container per task.
package driver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/client/lib/cpustats"
	"github.com/hashicorp/nomad/drivers/shared/eventer"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
)

// Driver implements drivers.DriverPlugin. This file holds only the RPCs.
type Driver struct {
	ctx    context.Context
	cancel context.CancelFunc
	logger hclog.Logger
	events *eventer.Eventer
	tasks  *task.Store
	probes probes

	claims    sync.Map  // container IDs owned by a task (see orphans.go)
	sweepOnce sync.Once // the orphan sweep starts after the first SetConfig

	mu      sync.RWMutex
	cfg     *Config
	rt      runtimeInfo // last fingerprint's findings
	compute cpustats.Compute
}

// New is the plugin factory given to plugins.Serve.
func New(logger hclog.Logger) drivers.DriverPlugin {
	ctx, cancel := context.WithCancel(context.Background())
	logger = logger.Named(PluginName)
	return &Driver{
		ctx:    ctx,
		cancel: cancel,
		logger: logger,
		events: eventer.NewEventer(ctx, logger),
		tasks:  task.NewStore(),
		probes: hostProbes(),
		cfg:    defaultConfig(),
	}
}

func (d *Driver) PluginInfo() (*base.PluginInfoResponse, error) { return pluginInfo(), nil }

func (d *Driver) ConfigSchema() (*hclspec.Spec, error) { return configSpec, nil }

func (d *Driver) SetConfig(c *base.Config) error {
	cfg := defaultConfig()
	if len(c.PluginConfig) > 0 {
		if err := base.MsgPackDecode(c.PluginConfig, cfg); err != nil {
			return fmt.Errorf("decode java-crun plugin config: %w", err)
		}
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := d.resolveShim(cfg); err != nil {
		return err
	}
	d.mu.Lock()
	d.cfg = cfg
	if c.AgentConfig != nil {
		d.compute = c.AgentConfig.Compute()
	}
	d.mu.Unlock()
	d.sweepOnce.Do(d.startOrphanSweep)
	return nil
}

func (d *Driver) TaskConfigSchema() (*hclspec.Spec, error) { return taskConfigSpec, nil }

func (d *Driver) Capabilities() (*drivers.Capabilities, error) { return capabilities, nil }

func (d *Driver) Fingerprint(ctx context.Context) (<-chan *drivers.Fingerprint, error) {
	ch := make(chan *drivers.Fingerprint)
	go d.fingerprintLoop(ctx, ch)
	return ch, nil
}

func (d *Driver) StartTask(cfg *drivers.TaskConfig) (*drivers.TaskHandle, *drivers.DriverNetwork, error) {
	if _, ok := d.tasks.Get(cfg.ID); ok {
		return nil, nil, fmt.Errorf("task %s already started", cfg.ID)
	}
	if d.ctx.Err() != nil {
		return nil, nil, errShuttingDown()
	}
	tc, rt, err := d.validateTask(cfg)
	if err != nil {
		return nil, nil, err
	}
	h, err := d.launch(cfg, tc, rt)
	if err != nil {
		return nil, nil, err
	}
	th := drivers.NewTaskHandle(handleVersion)
	th.Config = cfg
	if err := th.SetDriverState(&h.State); err != nil {
		_ = h.Kill(context.Background())
		_ = d.removeContainer(h.State, h.CLI)
		return nil, nil, fmt.Errorf("encode task state: %w", err)
	}
	d.tasks.Set(cfg.ID, h)
	go d.reportExit(h)
	return th, nil, nil
}

func (d *Driver) RecoverTask(th *drivers.TaskHandle) error {
	if th == nil || th.Config == nil {
		return errors.New("recover task: handle has no task config")
	}
	if _, ok := d.tasks.Get(th.Config.ID); ok {
		return nil
	}
	// Nomad owns this container from now on, even if recovery fails: then
	// it calls DestroyTask, which removes it by ID.
	d.claim(containerID(th.Config))
	var state task.State
	if err := th.GetDriverState(&state); err != nil {
		return fmt.Errorf("recover task %s: decode state: %w", th.Config.ID, err)
	}
	h, err := d.recover(th.Config, state)
	if err != nil {
		return err
	}
	d.tasks.Set(th.Config.ID, h)
	go d.reportExit(h)
	return nil
}

func (d *Driver) WaitTask(ctx context.Context, taskID string) (<-chan *drivers.ExitResult, error) {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	ch := make(chan *drivers.ExitResult, 1)
	go func() {
		defer close(ch)
		select {
		case <-h.Done():
			ch <- h.ExitResult()
		case <-ctx.Done():
		case <-d.ctx.Done():
		}
	}()
	return ch, nil
}

func (d *Driver) StopTask(taskID string, timeout time.Duration, signal string) error {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return drivers.ErrTaskNotFound
	}
	if signal == "" {
		signal = "SIGTERM"
	}
	name, _, err := ParseSignal(signal)
	if err != nil {
		return fmt.Errorf("kill_signal: %w", err)
	}
	return h.Stop(d.ctx, name, timeout)
}

func (d *Driver) DestroyTask(taskID string, force bool) error {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		// No handle (already destroyed, or never recovered): whatever is
		// left under the task's container ID goes, by name.
		if err := d.destroyByID(containerIDFor(taskID)); err != nil {
			return fmt.Errorf("destroy task %s: %w", taskID, err)
		}
		return nil
	}
	if h.IsRunning() {
		if !force {
			return fmt.Errorf("task %s is still running: stop it first or destroy with force", taskID)
		}
		if err := h.Kill(d.ctx); err != nil {
			d.logger.Warn("kill before destroy failed; deleting anyway", "task_id", taskID, "error", err)
		}
	}
	if err := d.removeContainer(h.State, h.CLI); err != nil {
		return fmt.Errorf("destroy task %s: %w", taskID, err)
	}
	d.tasks.Delete(taskID)
	return nil
}

func (d *Driver) InspectTask(taskID string) (*drivers.TaskStatus, error) {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	return h.Status(), nil
}

func (d *Driver) TaskStats(ctx context.Context, taskID string, interval time.Duration) (<-chan *drivers.TaskResourceUsage, error) {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	ch := make(chan *drivers.TaskResourceUsage)
	go d.statsLoop(ctx, h, interval, ch)
	return ch, nil
}

func (d *Driver) TaskEvents(ctx context.Context) (<-chan *drivers.TaskEvent, error) {
	return d.events.TaskEvents(ctx)
}

func (d *Driver) SignalTask(taskID string, signal string) error {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return drivers.ErrTaskNotFound
	}
	name, _, err := ParseSignal(signal)
	if err != nil {
		return err
	}
	return h.Signal(d.ctx, name)
}

func (d *Driver) ExecTask(taskID string, cmd []string, timeout time.Duration) (*drivers.ExecTaskResult, error) {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	return execTask(d.ctx, h, cmd, timeout)
}

func (d *Driver) ExecTaskStreaming(ctx context.Context, taskID string, opts *drivers.ExecOptions) (*drivers.ExitResult, error) {
	h, ok := d.tasks.Get(taskID)
	if !ok {
		return nil, drivers.ErrTaskNotFound
	}
	return execTaskStreaming(ctx, h, opts)
}

// Shutdown stops the plugin's goroutines; containers keep running.
func (d *Driver) Shutdown() { d.cancel() }

func (d *Driver) config() *Config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cfg
}

// cli is crun at path on state root root, with the configured deadline.
func (d *Driver) cli(path, root string) *crun.CLI {
	return &crun.CLI{Path: path, Root: root, Timeout: d.config().crunTimeout}
}

func (d *Driver) runtime() runtimeInfo {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.rt
}

var _ drivers.DriverPlugin = (*Driver)(nil)
var _ drivers.ExecTaskStreamingDriver = (*Driver)(nil)
var _ = crun.ErrNotExist
