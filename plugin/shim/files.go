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
	"strconv"
	"strings"
	"time"
)

// Files in the bundle directory.
const (
	ConfigFile  = "shim.json"       // written by the plugin before launch
	ExitFile    = "exit.json"       // written by the shim when crun run returns
	StartedFile = "started.json"    // written by the shim once crun started the container
	CrunRunLog  = "crun-run.log"    // crun's JSON log for `crun run`
	ShimLogFile = "shim.log"        // the shim's own diagnostics
	PidFile     = "container.pid"   // crun --pid-file: the container init's host pid
	SignalsFile = "signals.sent"    // signal numbers the driver delivered, one a line
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
	// CrunTimeout bounds the shim's own crun calls (run --detach, delete);
	// 0 means crun.DefaultTimeout.
	CrunTimeout time.Duration `json:"crun_timeout,omitempty"`
}

// Started records that `crun run --detach` started the container: the driver
// waits for it rather than asking crun (each `crun state` is a process,
// 0.2 s of CPU on an emulated lab host, while the JVM starts).
type Started struct {
	Pid int `json:"pid"` // the container init's host pid
}

// ReadStarted returns the started record, or an error wrapping
// os.ErrNotExist while crun has not started the container (yet).
func ReadStarted(bundle string) (*Started, error) {
	var s Started
	if err := readJSON(filepath.Join(bundle, StartedFile), &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Exit is how the container ended.
type Exit struct {
	ExitCode int `json:"exit_code"` // 128+N when the init was killed by signal N
	// Signal is N when the init was killed by signal N, or exited with
	// 128+N after the driver had delivered N to it (see Classify).
	Signal     int  `json:"signal"`
	WaitStatus *int `json:"wait_status,omitempty"` // the JVM's raw wait(2) status (from the init, else the init's own)
	// InitWaitStatus is the container init's raw wait status, as the shim
	// reaped it.
	InitWaitStatus *int      `json:"init_wait_status,omitempty"`
	OOMKilled      bool      `json:"oom_killed"`
	CrunError      string    `json:"crun_error,omitempty"` // crun's own failure, from its JSON log
	Err            string    `json:"error,omitempty"`      // the shim's failure to run crun at all
	FinishedAt     time.Time `json:"finished_at"`
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

// RecordSignal notes, before the driver delivers sig to the container, that
// it did: a JVM that handles SIGTERM exits with 143 by itself, and only this
// record tells that apart from an app that chose exit code 143.
func RecordSignal(bundle string, sig int) error {
	f, err := os.OpenFile(filepath.Join(bundle, SignalsFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record signal %d for the exit status: %w", sig, err)
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%d\n", sig)
	return err
}

// SentSignals returns the signals RecordSignal noted for the bundle.
func SentSignals(bundle string) []int {
	data, _ := os.ReadFile(filepath.Join(bundle, SignalsFile))
	var sigs []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			sigs = append(sigs, n)
		}
	}
	return sigs
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
