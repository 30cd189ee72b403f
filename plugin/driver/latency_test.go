package driver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/helper/uuid"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestBenchStartLatency compares the time from StartTask to hello.jar's
// first line with a bare `crun run` of the same OCI config, and measures
// the init's and the default seccomp profile's costs. A measurement, not a check: `./invoke bench` runs it
// (plugin.test runs ^TestHarness only) and reads its "bench" line.
func TestBenchStartLatency(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "hello.jar", 256, nil)
	defer cleanup()

	began := time.Now()
	h.start(t, cfg)
	startTask := time.Since(began)
	// Poll finely: waitFor's 100 ms steps would dominate the difference.
	for !strings.Contains(readLog(t, cfg, "stdout"), "hello from java-crun") {
		if time.Since(began) > 2*time.Minute {
			t.Fatal("no hello line within 2m")
		}
		time.Sleep(5 * time.Millisecond)
	}
	firstLine := time.Since(began)
	h.wait(t, cfg.ID, time.Minute)

	// The same config.json, run by hand: crun's own cost plus the JVM's.
	data, err := os.ReadFile(filepath.Join(h.root, "bundles", containerID(cfg), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	// The init's cost: the same config with java as PID 1 instead.
	noInit := spec
	noInit.Process = &specs.Process{}
	*noInit.Process = *spec.Process
	noInit.Process.Args = spec.Process.Args[1:]
	// The default seccomp profile's cost: its load, and a filter run on
	// every syscall the JVM makes.
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		t.Fatal("the driver's config has no seccomp profile: the default one is expected")
	}
	noSeccomp := spec
	noSeccomp.Linux = &specs.Linux{}
	*noSeccomp.Linux = *spec.Linux
	noSeccomp.Linux.Seccomp = nil
	var withInit, without, unconfined []time.Duration
	for i := 0; i < 3; i++ { // interleaved: a slow spell of the VM hits all three alike
		withInit = append(withInit, bareFirstLine(t, h.driver.runtime().CrunPath, spec))
		without = append(without, bareFirstLine(t, h.driver.runtime().CrunPath, noInit))
		unconfined = append(unconfined, bareFirstLine(t, h.driver.runtime().CrunPath, noSeccomp))
	}
	slices.Sort(withInit)
	slices.Sort(without)
	slices.Sort(unconfined)
	t.Logf("driver: StartTask %s, first line after %s; bare crun run: first line after %s (driver overhead %s)",
		startTask.Round(time.Millisecond), firstLine.Round(time.Millisecond), withInit[1].Round(time.Millisecond),
		(firstLine - withInit[1]).Round(time.Millisecond))
	t.Logf("init cost: bare crun run first line, median of 3: %s with the init, %s with java as PID 1 (%s; all: %v vs %v)",
		withInit[1].Round(time.Millisecond), without[1].Round(time.Millisecond),
		(withInit[1] - without[1]).Round(time.Millisecond), withInit, without)
	t.Logf("seccomp cost: bare crun run first line, median of 3: %s with the default profile, %s without (%s; all: %v vs %v)",
		withInit[1].Round(time.Millisecond), unconfined[1].Round(time.Millisecond),
		(withInit[1] - unconfined[1]).Round(time.Millisecond), withInit, unconfined)
	fmt.Printf("bench start_task_s=%.3f first_line_s=%.3f bare_crun_first_line_s=%.3f bare_crun_without_init_first_line_s=%.3f bare_crun_without_seccomp_first_line_s=%.3f\n",
		startTask.Seconds(), firstLine.Seconds(), withInit[1].Seconds(), without[1].Seconds(), unconfined[1].Seconds())
}

// bareFirstLine runs spec with a plain `crun run` and returns how long
// hello.jar's first line took.
func bareFirstLine(t *testing.T, crunPath string, spec specs.Spec) time.Duration {
	t.Helper()
	id := "bench-" + uuid.Generate()[:8]
	spec.Linux.CgroupsPath = "/java-crun-bench/" + id
	bundle := t.TempDir()
	_ = os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755)
	data, _ := json.Marshal(&spec)
	_ = os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
	root := t.TempDir()
	t.Cleanup(func() {
		_ = os.Remove("/sys/fs/cgroup/java-crun-bench/" + id)
		_ = os.Remove("/sys/fs/cgroup/java-crun-bench")
	})
	cmd := exec.Command(crunPath, "--root", root, "run", "--bundle", bundle, id)
	out, _ := cmd.StdoutPipe()
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first time.Duration
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if first == 0 && strings.Contains(sc.Text(), "hello from java-crun") {
			first = time.Since(began)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bare crun run: %v", err)
	}
	return first
}
