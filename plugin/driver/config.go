package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
	"github.com/nomad-lab/nomad-driver-java-crun/version"
)

// Config is the plugin configuration from the agent's plugin block.
type Config struct {
	CrunPath          string `codec:"crun_path"`
	StateRoot         string `codec:"state_root"`
	JavaHome          string `codec:"java_home"`
	FingerprintPeriod string `codec:"fingerprint_period"`
	PidsLimit         int64  `codec:"pids_limit"`
	DefaultUser       string `codec:"default_user"`
	// CrunTimeout bounds every crun call (state, kill, delete, run --detach);
	// a call that hangs longer fails with an error naming the command.
	CrunTimeout string `codec:"crun_timeout"`
	// OrphanGracePeriod is how long after start-up the plugin waits for
	// Nomad to claim (recover) each container it finds in its state root
	// before it kills and deletes the unclaimed ones.
	OrphanGracePeriod string `codec:"orphan_grace_period"`
	// AllowCaps is the ceiling of every task's capabilities: the default set
	// within it, and each task cap_add must be in it.
	AllowCaps []string `codec:"allow_caps"`
	// AllowRoot lets tasks run as uid 0 (off by default: a root task holds
	// the capability set as effective capabilities).
	AllowRoot bool `codec:"allow_root"`
	// Seccomp is "default" (the built-in profile), "unconfined", or the
	// absolute path of a JSON file in the OCI linux.seccomp format.
	Seccomp string `codec:"seccomp"`
	// MaskedPaths are hidden from every task in addition to the built-in list.
	MaskedPaths []string `codec:"masked_paths"`
	// ShimPath is the java-crun-shim binary run as each task's supervisor and
	// init; empty means java-crun.d/java-crun-shim beside the plugin binary,
	// or, when that is not installed, the plugin binary itself (slower).
	ShimPath string `codec:"shim_path"`

	fingerprintPeriod time.Duration
	crunTimeout       time.Duration
	orphanGrace       time.Duration
	allowCaps         []string            // normalized AllowCaps
	seccompProfile    *specs.LinuxSeccomp // from the Seccomp file; nil for the built-ins
	shim              shim.Binary         // resolved by SetConfig
}

// defaultConfig is what SetConfig starts from (the hclspec defaults).
func defaultConfig() *Config {
	return &Config{
		CrunPath:          "crun",
		StateRoot:         "/run/java-crun",
		FingerprintPeriod: "30s",
		PidsLimit:         4096,
		DefaultUser:       "nobody",
		CrunTimeout:       "30s",
		OrphanGracePeriod: "2m",
		AllowCaps:         defaultAllowCaps(),
		Seccomp:           "default",
		fingerprintPeriod: 30 * time.Second,
		crunTimeout:       30 * time.Second,
		orphanGrace:       2 * time.Minute,
		allowCaps:         slices.Clone(crun.DefaultCapabilities),
	}
}

// defaultAllowCaps is allow_caps' default: the default set, so a cap_add
// needs the operator's consent.
func defaultAllowCaps() []string {
	out := make([]string, 0, len(crun.DefaultCapabilities))
	for _, c := range crun.DefaultCapabilities {
		out = append(out, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return out
}

// validate checks the plugin config and fills derived fields.
func (c *Config) validate() error {
	if c.CrunPath == "" {
		return errors.New(`plugin config crun_path is empty: set it to "crun" (looked up on PATH) or an absolute path`)
	}
	if !filepath.IsAbs(c.StateRoot) {
		return fmt.Errorf("plugin config state_root %q must be an absolute path, e.g. /run/java-crun", c.StateRoot)
	}
	if c.JavaHome != "" && !filepath.IsAbs(c.JavaHome) {
		return fmt.Errorf("plugin config java_home %q must be an absolute path, e.g. /usr/lib/jvm/java-17-openjdk-amd64", c.JavaHome)
	}
	d, err := time.ParseDuration(c.FingerprintPeriod)
	if err != nil || d <= 0 {
		return fmt.Errorf("plugin config fingerprint_period %q is not a positive duration such as \"30s\"", c.FingerprintPeriod)
	}
	c.fingerprintPeriod = d
	if d, err = time.ParseDuration(c.CrunTimeout); err != nil || d <= 0 {
		return fmt.Errorf("plugin config crun_timeout %q is not a positive duration such as \"30s\"", c.CrunTimeout)
	}
	c.crunTimeout = d
	if d, err = time.ParseDuration(c.OrphanGracePeriod); err != nil || d <= 0 {
		return fmt.Errorf("plugin config orphan_grace_period %q is not a positive duration such as \"2m\" (how long Nomad gets to recover a container before the plugin removes it)", c.OrphanGracePeriod)
	}
	c.orphanGrace = d
	if c.PidsLimit < 0 {
		return fmt.Errorf("plugin config pids_limit %d must be >= 0 (0 disables the limit)", c.PidsLimit)
	}
	if c.DefaultUser == "" {
		return errors.New(`plugin config default_user is empty: set a user name such as "nobody"`)
	}
	if c.allowCaps, err = normalizeCaps("plugin config allow_caps", c.AllowCaps); err != nil {
		return err
	}
	if err := c.loadSeccomp(); err != nil {
		return err
	}
	for _, p := range c.MaskedPaths {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("plugin config masked_paths entry %q must be an absolute path inside the container, e.g. /etc/myapp/secret.key", p)
		}
	}
	return nil
}

// loadSeccomp checks the seccomp setting and reads a profile file at once,
// so that a broken file fails the agent's start, not every task.
func (c *Config) loadSeccomp() error {
	c.seccompProfile = nil
	switch {
	case c.Seccomp == "default" || c.Seccomp == "unconfined":
		return nil
	case !filepath.IsAbs(c.Seccomp):
		return fmt.Errorf("plugin config seccomp %q: use \"default\", \"unconfined\" or the absolute path of a JSON file in the OCI linux.seccomp format", c.Seccomp)
	}
	data, err := os.ReadFile(c.Seccomp)
	if err != nil {
		return fmt.Errorf("plugin config seccomp: %w", err)
	}
	var prof specs.LinuxSeccomp
	if err := json.Unmarshal(data, &prof); err != nil || prof.DefaultAction == "" {
		return fmt.Errorf("plugin config seccomp: %s is not an OCI linux.seccomp profile (JSON with defaultAction and syscalls): %v", c.Seccomp, err)
	}
	c.seccompProfile = &prof
	return nil
}

// TaskConfig is the job's task `config` block.
type TaskConfig struct {
	JarPath    string   `codec:"jar_path"`
	Class      string   `codec:"class"`
	ClassPath  []string `codec:"class_path"`
	JVMOptions []string `codec:"jvm_options"`
	Args       []string `codec:"args"`
	CapAdd     []string `codec:"cap_add"`
	CapDrop    []string `codec:"cap_drop"`
}

// validate rejects configs that cannot describe exactly one Java program.
func (t *TaskConfig) validate() error {
	switch {
	case t.JarPath == "" && t.Class == "":
		return errors.New(`task config needs either jar_path (e.g. "local/app.jar") or class with class_path`)
	case t.JarPath != "" && t.Class != "":
		return errors.New("task config sets both jar_path and class: use jar_path for an executable JAR, or class with class_path")
	case t.Class != "" && len(t.ClassPath) == 0:
		return fmt.Errorf("task config class %q needs class_path (a list of JARs or directories, e.g. [\"local/app.jar\"])", t.Class)
	case t.JarPath != "" && len(t.ClassPath) > 0:
		return errors.New("task config class_path is only used with class: with jar_path, put dependencies in the JAR manifest's Class-Path")
	}
	if t.Class != "" && strings.ContainsAny(t.Class, " /\t") {
		return fmt.Errorf("task config class %q is not a Java class name (expected e.g. com.example.Main)", t.Class)
	}
	for i, opt := range t.JVMOptions {
		if !strings.HasPrefix(opt, "-") {
			return fmt.Errorf("task config jvm_options[%d] %q is not a JVM option: each must start with '-' (program arguments go in args)", i, opt)
		}
	}
	return nil
}

// resolveShim finds the shim binary for cfg (see shim.FindBinary); the
// plugin's own binary standing in for it is allowed, and logged.
func (d *Driver) resolveShim(cfg *Config) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locate the driver binary (the shim's default location is beside it): %w", err)
	}
	bin, err := shim.FindBinary(d.ctx, cfg.ShimPath, self, version.String())
	if err != nil {
		return err
	}
	if bin.Fallback {
		d.logger.Warn("no shim binary installed: the plugin binary runs as each task's shim and init, which makes every task start slower",
			"install", filepath.Join(filepath.Dir(self), shim.BinaryDir, shim.BinaryName))
	}
	cfg.shim = bin
	return nil
}
