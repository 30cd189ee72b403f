package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A fake cgroup tree: plain files stand in for cgroupfs, so these tests check
// which files are written, not what the kernel does with them (the harness
// tests on the lab host check that, on a freshly booted VM too).

func TestPrepareCgroupEnablesControllersFromTheRoot(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "java-crun", "alloc.task")

	if err := prepareCgroupUnder(root, dir, ""); err != nil {
		t.Fatal(err)
	}
	// Each write replaces the fake file, so the last controller is what is left;
	// what matters is that the root's file was written at all.
	for _, level := range []string{root, filepath.Join(root, "java-crun"), dir} {
		data, err := os.ReadFile(filepath.Join(level, "cgroup.subtree_control"))
		if err != nil {
			t.Fatalf("controllers not enabled in %s: %v", level, err)
		}
		if got := string(data); got != "+pids" {
			t.Errorf("%s: last write %q, want +pids", level, got)
		}
	}
}

func TestPrepareCgroupNamesTheMissingCpusetController(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "java-crun", "alloc.task")

	err := prepareCgroupUnder(root, dir, "1")
	if err == nil {
		t.Fatal("pinning cores without a cpuset.cpus file succeeded")
	}
	for _, want := range []string{"cpuset controller is not enabled", filepath.Join(root, "java-crun"), "+cpuset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestPrepareCgroupPinsReservedCores(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "java-crun", "alloc.task")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cpuset.cpus"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := prepareCgroupUnder(root, dir, "1"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "cpuset.cpus"))
	if string(data) != "1" {
		t.Errorf("cpuset.cpus = %q, want 1", data)
	}
}
