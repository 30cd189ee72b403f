// Package shim is the container's supervisor: the driver binary re-executed
// (detached, in its own session) to run `crun run` in the foreground and
// record how the container ended in the bundle directory.
//
// Why: the plugin process may die (kill -9, agent restart) while the
// container must go on running, and a restarted plugin is not the parent of
// anything it did not start, so it cannot wait(2) for an exit code. The shim
// is that parent; it writes exit.json, which any plugin instance can read.
package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Files in the bundle directory.
const (
	ConfigFile  = "shim.json"       // written by the plugin before launch
	ExitFile    = "exit.json"       // written by the shim when crun run returns
	CrunRunLog  = "crun-run.log"    // crun's JSON log for `crun run`
	ShimLogFile = "shim.log"        // the shim's own diagnostics
	envMarker   = "_JAVA_CRUN_SHIM" // set in the shim's environment to select shim mode
)

// Config tells the shim what to run.
type Config struct {
	CrunPath    string `json:"crun_path"`
	CrunRoot    string `json:"crun_root"`
	ContainerID string `json:"container_id"`
	Bundle      string `json:"bundle"`
	// CgroupDir is the host path of the cgroup whose memory.events counts the
	// container's OOM kills (the parent of the container's own cgroup, which
	// crun removes when the container exits).
	CgroupDir string `json:"cgroup_dir"`
}

// Exit is how the container ended.
type Exit struct {
	ExitCode   int       `json:"exit_code"`
	Signal     int       `json:"signal"`
	OOMKilled  bool      `json:"oom_killed"`
	CrunError  string    `json:"crun_error,omitempty"` // crun's own failure, from its JSON log
	Err        string    `json:"error,omitempty"`      // the shim's failure to run crun at all
	FinishedAt time.Time `json:"finished_at"`
}

// WriteConfig stores cfg in its bundle.
func WriteConfig(cfg *Config) error {
	return writeJSON(filepath.Join(cfg.Bundle, ConfigFile), cfg)
}

// ReadConfig loads the bundle's shim config.
func ReadConfig(bundle string) (*Config, error) {
	var cfg Config
	if err := readJSON(filepath.Join(bundle, ConfigFile), &cfg); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// ReadExit returns the recorded exit, or an error wrapping os.ErrNotExist
// while the container has not ended.
func ReadExit(bundle string) (*Exit, error) {
	var e Exit
	if err := readJSON(filepath.Join(bundle, ExitFile), &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// writeJSON writes atomically: a reader never sees half a file.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}
