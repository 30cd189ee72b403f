package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// No orphan, ever: a container lives in <state_root>/crun (crun's state)
// and <state_root>/bundles (its bundle). Two paths remove one that the
// driver has no handle for:
//
//   - DestroyTask of an unknown task ID (its recovery failed, or the plugin
//     restarted without it): the container ID is derived from the task ID,
//     so it is force-deleted by name.
//   - the orphan sweep: at start-up the plugin notes every container in its
//     own state root; those no task claimed (RecoverTask or StartTask)
//     within orphan_grace_period are killed and deleted.
//
// Both only ever look inside the plugin's own state root.

// stateRootPaths are crun's --root and the bundles directory.
func stateRootPaths(stateRoot string) (crunRoot, bundles string) {
	return filepath.Join(stateRoot, "crun"), filepath.Join(stateRoot, "bundles")
}

// claim marks a container as owned by a task, so the sweep spares it.
func (d *Driver) claim(id string) { d.claims.Store(id, true) }

func (d *Driver) claimed(id string) bool {
	_, ok := d.claims.Load(id)
	return ok
}

// leftContainers lists the container IDs found in the state root: crun's
// state directories and bundles, either of which may outlive the other.
func leftContainers(stateRoot string) []string {
	crunRoot, bundles := stateRootPaths(stateRoot)
	seen := map[string]bool{}
	for _, dir := range []string{crunRoot, bundles} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			// Only names the driver could have made: never act on a stray
			// file, or on a name crun would read as an option.
			if e.IsDir() && containerIDUnsafe.FindStringIndex(e.Name()) == nil && e.Name()[0] != '-' && e.Name()[0] != '.' {
				seen[e.Name()] = true
			}
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// startOrphanSweep notes the containers present now and, after the grace
// period, removes those no task claimed. Containers created later belong to
// StartTask calls and are never candidates.
func (d *Driver) startOrphanSweep() {
	cfg := d.config()
	ids := leftContainers(cfg.StateRoot)
	if len(ids) == 0 {
		return
	}
	d.logger.Info("containers found in the state root; waiting for Nomad to recover them",
		"count", len(ids), "state_root", cfg.StateRoot, "orphan_grace_period", cfg.orphanGrace)
	go func() {
		select {
		case <-time.After(cfg.orphanGrace):
		case <-d.ctx.Done():
			return
		}
		for _, id := range ids {
			if d.claimed(id) {
				continue
			}
			if !d.containerExists(cfg.StateRoot, id) {
				continue // destroyed meanwhile
			}
			_, bundles := stateRootPaths(cfg.StateRoot)
			d.logger.Warn("removing orphaned container: no task claimed it within orphan_grace_period",
				"container_id", id, "bundle", filepath.Join(bundles, id), "orphan_grace_period", cfg.orphanGrace)
			if err := d.destroyByID(id); err != nil {
				d.logger.Error("could not remove orphaned container", "container_id", id, "error", err)
			}
		}
	}()
}

func (d *Driver) containerExists(stateRoot, id string) bool {
	crunRoot, bundles := stateRootPaths(stateRoot)
	for _, p := range []string{filepath.Join(crunRoot, id), filepath.Join(bundles, id)} {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

// destroyByID kills and deletes container id in the plugin's state root,
// with its cgroups and bundle, and returns nil only once crun no longer
// knows it and the bundle is gone.
func (d *Driver) destroyByID(id string) error {
	cfg := d.config()
	crunRoot, bundles := stateRootPaths(cfg.StateRoot)
	if !d.containerExists(cfg.StateRoot, id) {
		return nil
	}
	state := task.State{ContainerID: id, BundleDir: filepath.Join(bundles, id), CrunRoot: crunRoot}
	if sc, err := shim.ReadConfig(state.BundleDir); err == nil {
		state.CgroupDir = sc.CgroupDir // removeCgroup only acts under /sys/fs/cgroup
		state.CrunPath = sc.CrunPath
	}
	if p := d.runtime().CrunPath; p != "" {
		state.CrunPath = p
	}
	if state.CrunPath == "" {
		p, err := findCrun(cfg.CrunPath, exec.LookPath)
		if err != nil {
			return fmt.Errorf("remove container %s: %w", id, err)
		}
		state.CrunPath = p
	}
	cli := d.cli(state.CrunPath, crunRoot)
	if err := d.removeContainer(state, cli); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cli.Deadline())
	defer cancel()
	if st, err := cli.State(ctx, id); !errors.Is(err, crun.ErrNotExist) {
		return fmt.Errorf("container %s still exists after crun delete --force (state %+v, %v): remove it with `%s --root %s delete --force %s`",
			id, st, err, state.CrunPath, crunRoot, id)
	}
	if _, err := os.Lstat(state.BundleDir); err == nil {
		return fmt.Errorf("bundle %s still exists after removing container %s", state.BundleDir, id)
	}
	return nil
}
