package driver

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
)

const (
	cgroupRoot = "/sys/fs/cgroup"
	// ownedCgroupParent holds task cgroups when Nomad did not assign one
	// (e.g. the driver harness); the driver removes what it creates there.
	ownedCgroupParent = cgroupRoot + "/java-crun"
	// containerCgroupName is the container's own cgroup under the task's:
	// crun deletes it on exit, while the task cgroup keeps memory.events,
	// whose hierarchical oom_kill count tells us about OOM kills afterwards.
	containerCgroupName = "container"
)

// taskCgroup returns the host path of the task's cgroup: the one Nomad
// prepared (cgroup v2: /sys/fs/cgroup/nomad.slice/<partition>/<alloc>.<task>.scope)
// or, without one, a driver-owned path.
func taskCgroup(cfg *drivers.TaskConfig, containerID string) string {
	if cfg.Resources != nil && cfg.Resources.LinuxResources != nil {
		p := cfg.Resources.LinuxResources.CpusetCgroupPath
		if strings.HasPrefix(p, cgroupRoot+"/") {
			return filepath.Clean(p)
		}
	}
	return filepath.Join(ownedCgroupParent, containerID)
}

// crunCgroupsPath is the OCI linux.cgroupsPath for a host cgroup directory.
func crunCgroupsPath(hostDir string) string {
	return strings.TrimPrefix(hostDir, cgroupRoot)
}

// removeCgroup kills anything left in dir and its children, then removes
// them, deepest first. A missing dir is fine.
func removeCgroup(dir string, timeout time.Duration) error {
	if dir == "" || !strings.HasPrefix(dir, cgroupRoot+"/") {
		return nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name()), timeout); err != nil {
				return err
			}
		}
	}
	// cgroup.kill (Linux 5.14+) SIGKILLs every process in the cgroup.
	if procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs")); len(bytes.TrimSpace(procs)) > 0 {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond) // processes take a moment to die after cgroup.kill
	}
}

// cgroupUsage is what TaskStats reports, read from cgroup v2 files.
type cgroupUsage struct {
	MemoryCurrent uint64
	MemoryPeak    uint64
	Swap          uint64
	RSS           uint64 // memory.stat anon
	Cache         uint64 // memory.stat file
	CPUUsageUsec  uint64
	CPUUserUsec   uint64
	CPUSystemUsec uint64
	NrThrottled   uint64
	ThrottledUsec uint64
}

func readCgroupUsage(dir string) (*cgroupUsage, error) {
	current, err := readUint(filepath.Join(dir, "memory.current"))
	if err != nil {
		return nil, err
	}
	u := &cgroupUsage{MemoryCurrent: current}
	u.MemoryPeak, _ = readUint(filepath.Join(dir, "memory.peak"))
	u.Swap, _ = readUint(filepath.Join(dir, "memory.swap.current"))
	if data, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
		kv := parseKeyValues(data)
		u.RSS, u.Cache = kv["anon"], kv["file"]
	}
	if data, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
		kv := parseKeyValues(data)
		u.CPUUsageUsec, u.CPUUserUsec, u.CPUSystemUsec = kv["usage_usec"], kv["user_usec"], kv["system_usec"]
		u.NrThrottled, u.ThrottledUsec = kv["nr_throttled"], kv["throttled_usec"]
	}
	return u, nil
}

func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// parseKeyValues reads "key value" lines (memory.stat, cpu.stat, memory.events).
func parseKeyValues(data []byte) map[string]uint64 {
	kv := map[string]uint64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if n, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			kv[f[0]] = n
		}
	}
	return kv
}

// delegatedControllers are enabled down to the task cgroup so that crun can
// set limits on the container's child cgroup.
var delegatedControllers = []string{"cpu", "cpuset", "memory", "pids"}

// prepareTaskCgroup creates the task cgroup and enables the controllers from
// the root down to it (Nomad already did this for its own slices: writing
// again is a no-op). The root counts: on a freshly booted host nothing has
// enabled cpuset there yet (systemd enables it only for units that pin
// CPUs), and then no cgroup below it has a cpuset.cpus file. A controller
// the host lacks is left out; crun then reports what it cannot set.
//
// With reserved cores, the task cgroup's own cpuset.cpus is set too (as
// Nomad's exec driver does on the same cgroup): the container's cpuset must
// lie within its parent's.
func prepareTaskCgroup(dir, cpus string) error {
	return prepareCgroupUnder(cgroupRoot, dir, cpus)
}

func prepareCgroupUnder(root, dir, cpus string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create task cgroup %s: %w", dir, err)
	}
	rel := strings.TrimPrefix(dir, root+"/")
	p := root
	for _, part := range strings.Split(rel, "/") {
		enableControllers(p)
		p = filepath.Join(p, part)
	}
	enableControllers(dir)
	if cpus != "" {
		if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus")); err != nil {
			parent := filepath.Dir(dir)
			enabled, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
			return fmt.Errorf("pin task cgroup %s to cores %s: the cpuset controller is not enabled in %s (its cgroup.subtree_control has %q); enable it from the root down (echo +cpuset > cgroup.subtree_control at each level) or check that the kernel has cpuset",
				dir, cpus, parent, strings.TrimSpace(string(enabled)))
		}
		if err := os.WriteFile(filepath.Join(dir, "cpuset.cpus"), []byte(cpus), 0o644); err != nil {
			return fmt.Errorf("pin task cgroup %s to cores %s: %w", dir, cpus, err)
		}
	}
	return nil
}

// enableControllers enables each delegated controller in dir's children, one
// write each so that a controller the host lacks does not stop the others.
func enableControllers(dir string) {
	for _, c := range delegatedControllers {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644)
	}
}
