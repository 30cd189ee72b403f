package driver

import (
	"strings"
	"testing"
)

func TestCPUSharesWithinKernelRange(t *testing.T) {
	cases := []struct {
		name           string
		requested, tot int64
		want           uint64
		note           string
	}{
		{"ordinary", 500, 4000, 500, ""},
		{"none", 0, 4000, 0, ""},
		{"below the minimum", 1, 4000, 2, "below the kernel's minimum"},
		{"above the maximum", 300000, 0, 262144, "above the kernel's maximum of 262144 shares"},
		{"a huge node scales", 131072, 524288, 65536, "scaled to 65536 shares"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, note := cpuShares(c.requested, c.tot)
			if got != c.want || (c.note == "") != (note == "") || !strings.Contains(note, c.note) {
				t.Fatalf("cpuShares(%d, %d) = %d %q, want %d %q", c.requested, c.tot, got, note, c.want, c.note)
			}
		})
	}
}

func TestSpecCpusetAndClampedWeight(t *testing.T) {
	cfg := testTaskConfig()
	cfg.Resources.LinuxResources.CpusetCpus = "1"
	cfg.Resources.LinuxResources.CPUShares = 400000
	in, notes, err := buildSpecInput(cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
	if err != nil {
		t.Fatal(err)
	}
	if in.CpusetCpus != "1" || in.CPUShares != maxCPUShares {
		t.Fatalf("cpuset %q shares %d", in.CpusetCpus, in.CPUShares)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "cpu 400000 is above") {
		t.Fatalf("notes %q: the clamp must be told in a task event", notes)
	}
	s := buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
	if s.Linux.Resources.CPU.Cpus != "1" || *s.Linux.Resources.CPU.Shares != maxCPUShares {
		t.Fatalf("spec cpu %+v", s.Linux.Resources.CPU)
	}
	for _, bad := range []string{"x", "1-", "0,a"} {
		if validCpuset(bad) == nil {
			t.Errorf("cpuset %q accepted", bad)
		}
	}
	if validCpuset("0-3,5") != nil {
		t.Error("a valid cpuset refused")
	}
}
