package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The shim's own binary, installed beside the plugin's (a directory, which
// Nomad's plugin loader skips: it would try every executable file in
// plugin_dir as a plugin and fail the agent's start on this one).
const (
	BinaryDir  = "java-crun.d"
	BinaryName = "java-crun-shim"
)

// VersionLine is what `java-crun-shim --version` prints for a build.
func VersionLine(build string) string { return BinaryName + " " + build }

// Binary is the program the driver runs as each task's shim and init.
type Binary struct {
	Path string
	// Fallback is true when no shim binary was installed and the driver's own
	// binary stands in for it (it carries the same code, but starts slower).
	Fallback bool
}

// FindBinary resolves the shim: the configured path, which must be usable;
// else java-crun.d/java-crun-shim beside self; else self. A shim that reports
// a build other than the driver's is refused: the two share files and a
// protocol, so they must come from one build.
func FindBinary(ctx context.Context, configured, self, build string) (Binary, error) {
	if configured != "" {
		if !filepath.IsAbs(configured) {
			return Binary{}, fmt.Errorf("plugin config shim_path %q must be an absolute path, e.g. /opt/nomad/plugins/%s/%s", configured, BinaryDir, BinaryName)
		}
		return Binary{Path: configured}, checkBinary(ctx, configured, build, "plugin config shim_path")
	}
	beside := filepath.Join(filepath.Dir(self), BinaryDir, BinaryName)
	if _, err := os.Stat(beside); errors.Is(err, os.ErrNotExist) {
		return Binary{Path: self, Fallback: true}, nil
	}
	return Binary{Path: beside}, checkBinary(ctx, beside, build, "the shim beside the driver")
}

func checkBinary(ctx context.Context, path, build, what string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s %s is not runnable (%v): install java-crun-shim from the driver's build there", what, path, err)
	}
	got := strings.TrimSpace(string(out))
	if want := VersionLine(build); got != want {
		return fmt.Errorf("%s %s is %q but the driver is %q: install the plugin and its shim from one build", what, path, got, want)
	}
	return nil
}
