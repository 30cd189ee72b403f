package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/client/lib/cpustats"
	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// TestTaskStatsReadsTheTaskCgroup: TaskStats must send the task cgroup's
// figures at once and then every interval, with Measured filled in; a real
// agent's alloc stats API shows exactly what arrives here.
func TestTaskStatsReadsTheTaskCgroup(t *testing.T) {
	cg := t.TempDir()
	for name, content := range map[string]string{
		"memory.current": "73400320\n", "memory.peak": "80000000\n", "memory.swap.current": "0\n",
		"memory.stat": "anon 67108864\nfile 4194304\n",
		"cpu.stat":    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_throttled 3\nthrottled_usec 1200\n",
	} {
		if err := os.WriteFile(filepath.Join(cg, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := New(hclog.NewNullLogger()).(*Driver)
	defer d.Shutdown()
	d.compute = cpustats.Compute{TotalCompute: 4000, NumCores: 2}
	ticks, _ := shim.StartTicks(os.Getpid()) // a live "shim": the handle stays running
	cfg := &drivers.TaskConfig{ID: "a/t/1", Name: "t"}
	h := task.RecoverHandle(task.State{ContainerID: "c", CgroupDir: cg, ShimPID: os.Getpid(), ShimStartTicks: ticks},
		cfg, &crun.CLI{}, hclog.NewNullLogger())
	d.tasks.Set(cfg.ID, h)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := d.TaskStats(ctx, cfg.ID, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var got []*drivers.TaskResourceUsage
	for len(got) < 2 {
		select {
		case u := <-ch:
			got = append(got, u)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d stats within 5s, want one at once and one per interval", len(got))
		}
	}
	m, c := got[1].ResourceUsage.MemoryStats, got[1].ResourceUsage.CpuStats
	if m.RSS != 64<<20 || m.Usage != 73400320 || m.MaxUsage != 80000000 || m.Cache != 4<<20 || len(m.Measured) == 0 {
		t.Errorf("memory %+v", m)
	}
	if c.ThrottledPeriods != 3 || c.ThrottledTime != 1200*1000 || len(c.Measured) == 0 {
		t.Errorf("cpu %+v", c)
	}
}
