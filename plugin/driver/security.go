package driver

import (
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// secretGlobs find private keys that packages drop under /etc outside the
// directories crun.EtcSecrets masks whole (e.g. /etc/myapp/tls/server.key).
// Matched at each start: a key installed later is masked from the next task.
var secretGlobs = []string{
	"/etc/*/*.key", "/etc/*/*/*.key", "/etc/*/*-key.pem", "/etc/*/*/*-key.pem",
	"/etc/*/*.keytab", "/etc/*/*/*.keytab",
}

// security is the task's capability set, seccomp profile and extra masks.
type security struct {
	Caps    []string
	Seccomp *specs.LinuxSeccomp
	Masked  []string
}

// taskSecurity applies the plugin's policy to the task's cap_add/cap_drop.
// glob is filepath.Glob (injected for tests).
func taskSecurity(c *Config, tc *TaskConfig, glob func(string) ([]string, error)) (security, error) {
	caps, err := taskCapabilities(c.allowCaps, tc.CapAdd, tc.CapDrop)
	if err != nil {
		return security{}, err
	}
	s := security{Caps: caps, Masked: slices.Clone(c.MaskedPaths)}
	switch {
	case c.seccompProfile != nil:
		s.Seccomp = c.seccompProfile
	case c.Seccomp == "default":
		s.Seccomp = crun.DefaultSeccomp(caps)
	}
	for _, pattern := range secretGlobs {
		matches, _ := glob(pattern)
		for _, m := range matches {
			if !maskedByDir(m) {
				s.Masked = append(s.Masked, m)
			}
		}
	}
	return s, nil
}

// maskedByDir: a path inside a directory that is masked already is gone
// anyway (crun would fail to mount over it in the empty tmpfs).
func maskedByDir(p string) bool {
	for _, dir := range crun.EtcSecrets {
		if strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}

// checkRoot refuses uid 0 unless the operator allows root tasks.
func checkRoot(c *Config, userName string, uid uint32) error {
	if uid != 0 || c.AllowRoot {
		return nil
	}
	return fmt.Errorf("task user %q is root (uid 0) and this node refuses root tasks: run the task as another user (set `user`), or set allow_root = true in the agent's plugin \"nomad-driver-java-crun\" config", userName)
}
