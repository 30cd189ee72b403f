package driver

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/helper/uuid"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestHarnessStartLatency compares the time from StartTask to hello.jar's
// first line with a bare `crun run` of the same OCI config. It only logs.
func TestHarnessStartLatency(t *testing.T) {
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
	id := "bench-" + uuid.Generate()[:8]
	spec.Linux.CgroupsPath = "/java-crun-bench/" + id
	bundle := t.TempDir()
	_ = os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755)
	data, _ = json.Marshal(&spec)
	_ = os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
	root := t.TempDir()
	t.Cleanup(func() {
		_ = os.Remove("/sys/fs/cgroup/java-crun-bench/" + id)
		_ = os.Remove("/sys/fs/cgroup/java-crun-bench")
	})

	cmd := exec.Command(h.driver.runtime().CrunPath, "--root", root, "run", "--bundle", bundle, id)
	out, _ := cmd.StdoutPipe()
	bareBegan := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var bareFirst time.Duration
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if bareFirst == 0 && strings.Contains(sc.Text(), "hello from java-crun") {
			bareFirst = time.Since(bareBegan)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bare crun run: %v", err)
	}
	t.Logf("driver: StartTask %s, first line after %s; bare crun run: first line after %s (driver overhead %s)",
		startTask.Round(time.Millisecond), firstLine.Round(time.Millisecond), bareFirst.Round(time.Millisecond),
		(firstLine - bareFirst).Round(time.Millisecond))
}
