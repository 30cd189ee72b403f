package driver

// Harness test of reserved cores and the cpu weight clamp with real crun.

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestHarnessReservedCoreAndClampedWeight(t *testing.T) {
	requireRuntime(t)
	requireLimits(t)
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 cores to pin the task to one of them")
	}
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 256, nil)
	defer cleanup()
	// `resources { cores = 1 }` as Nomad passes it when it reserved core 1,
	// and a cpu above the kernel's weight range (crun used to fail on it).
	cfg.Resources.LinuxResources.CpusetCpus = "1"
	cfg.Resources.LinuxResources.CPUShares = 400000
	events, err := h.TaskEvents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h.start(t, cfg)
	waitRunningJVM(t, h, cfg)
	select {
	case ev := <-events:
		if !strings.Contains(ev.Message, "cpu 400000 is above the kernel's maximum") {
			t.Errorf("event %q", ev.Message)
		}
	case <-time.After(10 * time.Second):
		t.Error("no task event about the clamped cpu weight")
	}
	out, _ := h.exec(t, cfg, "/bin/sh", "-c", "nproc; cat /sys/fs/cgroup/cpuset.cpus.effective; cat /sys/fs/cgroup/cpu.weight; grep Cpus_allowed_list /proc/$(cat /proc/1/task/*/children | cut -d' ' -f1)/status")
	f := strings.Fields(out)
	// nproc reads the affinity mask, as the JVM's availableProcessors does.
	if len(f) < 5 || f[0] != "1" || f[1] != "1" || f[2] != "10000" || f[4] != "1" {
		t.Fatalf("want 1 processor, cpuset 1, weight 10000 and the JVM allowed on core 1 only; got %q", out)
	}
	_ = h.DestroyTask(cfg.ID, true)
}
