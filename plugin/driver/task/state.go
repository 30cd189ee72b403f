// Package task holds the driver's per-task pieces: the persisted State
// (what RecoverTask needs), the live Handle and the in-memory Store.
package task

import "time"

// State is persisted by Nomad in the task handle; it is everything a new
// plugin process needs to re-attach to a running container.
type State struct {
	ContainerID string
	BundleDir   string // holds config.json, shim.json, started.json, exit.json and crun's logs
	CrunPath    string
	CrunRoot    string // crun --root
	// CgroupDir is the host path of the task's cgroup; the container's own
	// cgroup is its child ContainerCgroup, which crun creates and removes.
	CgroupDir       string
	ContainerCgroup string
	ShimPID         int
	ShimStartTicks  uint64 // with ShimPID, identifies the shim across pid reuse
	ContainerPID    int
	StartedAt       time.Time
	StdoutPath      string
	StderrPath      string
}
