package driver

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/hashicorp/nomad/client/lib/cpustats"
	cstructs "github.com/hashicorp/nomad/client/structs"
	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
)

// fingerprintLoop fingerprints at once, then every fingerprint_period.
func (d *Driver) fingerprintLoop(ctx context.Context, ch chan<- *drivers.Fingerprint) {
	defer close(ch)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.ctx.Done():
			return
		case <-timer.C:
		}
		fp, rt := fingerprint(ctx, d.config(), d.probes, d.runtime())
		d.mu.Lock()
		d.rt = rt
		d.mu.Unlock()
		select {
		case ch <- fp:
		case <-ctx.Done():
			return
		case <-d.ctx.Done():
			return
		}
		timer.Reset(d.config().fingerprintPeriod)
	}
}

// reportExit turns an OOM kill or a crun failure into a task event, so the
// reason shows in `nomad alloc status` next to the exit code.
func (d *Driver) reportExit(h *task.Handle) {
	select {
	case <-h.Done():
	case <-d.ctx.Done():
		return
	}
	res := h.ExitResult()
	event := func(msg string, annotations map[string]string) {
		_ = d.events.EmitEvent(&drivers.TaskEvent{
			TaskID: h.Config.ID, TaskName: h.Config.Name, AllocID: h.Config.AllocID,
			Timestamp: time.Now(), Message: msg, Annotations: annotations,
		})
	}
	if res.OOMKilled {
		limit := "its memory limit"
		if r := h.Config.Resources; r != nil && r.NomadResources != nil {
			l, _ := memoryLimits(r.NomadResources)
			limit = fmt.Sprintf("its memory limit of %d MiB", l/mib)
		}
		event("OOM Killed: the container exceeded "+limit+"; raise the task's memory or lower the JVM heap (-Xmx)",
			map[string]string{"oom_killed": "true", "exit_code": fmt.Sprint(res.ExitCode)})
	}
	if res.Err != nil {
		event(res.Err.Error(), map[string]string{"exit_code": fmt.Sprint(res.ExitCode)})
	}
}

// taskEvent tells the task's events (`nomad alloc status`) something the
// driver decided for it, e.g. a clamped cpu weight.
func (d *Driver) taskEvent(cfg *drivers.TaskConfig, msg string) {
	_ = d.events.EmitEvent(&drivers.TaskEvent{
		TaskID: cfg.ID, TaskName: cfg.Name, AllocID: cfg.AllocID, Timestamp: time.Now(), Message: msg,
	})
}

// statsLoop reports the task cgroup's memory and CPU every interval.
func (d *Driver) statsLoop(ctx context.Context, h *task.Handle, interval time.Duration, ch chan<- *drivers.TaskResourceUsage) {
	defer close(ch)
	d.mu.RLock()
	compute := d.compute
	d.mu.RUnlock()
	if compute.NumCores == 0 {
		compute.NumCores = runtime.NumCPU()
	}
	total, user, system := cpustats.New(compute), cpustats.New(compute), cpustats.New(compute)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.ctx.Done():
			return
		case <-h.Done():
			return
		case <-timer.C:
			timer.Reset(interval)
		}
		u, err := readCgroupUsage(h.State.CgroupDir)
		if err != nil {
			d.logger.Debug("task stats unavailable", "cgroup", h.State.CgroupDir, "error", err)
			continue
		}
		percent := total.Percent(float64(u.CPUUsageUsec) * 1000)
		usage := &drivers.TaskResourceUsage{
			Timestamp: time.Now().UTC().UnixNano(),
			ResourceUsage: &cstructs.ResourceUsage{
				MemoryStats: &cstructs.MemoryStats{
					RSS: u.RSS, Cache: u.Cache, Swap: u.Swap, Usage: u.MemoryCurrent, MaxUsage: u.MemoryPeak,
					Measured: []string{"RSS", "Cache", "Swap", "Usage", "Max Usage"},
				},
				CpuStats: &cstructs.CpuStats{
					SystemMode:       system.Percent(float64(u.CPUSystemUsec) * 1000),
					UserMode:         user.Percent(float64(u.CPUUserUsec) * 1000),
					Percent:          percent,
					TotalTicks:       total.TicksConsumed(percent),
					ThrottledPeriods: u.NrThrottled,
					ThrottledTime:    u.ThrottledUsec * 1000,
					Measured:         []string{"System Mode", "User Mode", "Percent", "Total Ticks", "Throttled Periods", "Throttled Time"},
				},
			},
		}
		select {
		case ch <- usage:
		case <-ctx.Done():
			return
		}
	}
}
