package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/shared/structs"
	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// Node attributes the fingerprint sets.
const (
	AttrCrunVersion = attrPrefix + "crun.version"
	AttrCrunPath    = attrPrefix + "crun.path"
	AttrJavaVersion = attrPrefix + "java.version"
	AttrJavaHome    = attrPrefix + "java.home"
	AttrCgroupMode  = attrPrefix + "cgroup.mode"
	// AttrShim is the binary each task's shim and init run from; the plugin's
	// own when java-crun-shim is not installed.
	AttrShim = attrPrefix + "shim"
)

const fallbackCrunPath = "/usr/bin/crun"

// probes are the fingerprint's view of the host, injected so that tests need
// neither crun nor java.
type probes struct {
	isRoot       func() bool
	lookPath     func(file string) (string, error)
	evalSymlinks func(path string) (string, error)
	getenv       func(key string) string
	crunVersion  func(ctx context.Context, crunPath string) (string, error)
	javaVersion  func(ctx context.Context, javaBin string) (string, error) // first line of `java -version`
	cgroupMode   func() string                                             // v2, hybrid, v1 or none
	javaKey      func(javaHome string) string                              // changes when the java install does
	crunKey      func(crunPath string) string                              // changes when the crun binary does
	now          func() time.Time
}

// reprobeAfter bounds how long an unchanged, healthy java install or crun
// binary is trusted without running `java -version` or `crun --version` again
// (a JVM start costs a second under emulation, crun 0.2 s; the lab fingerprints
// every second).
const reprobeAfter = time.Minute

func hostProbes() probes {
	return probes{
		isRoot:       func() bool { return os.Geteuid() == 0 },
		lookPath:     exec.LookPath,
		evalSymlinks: filepath.EvalSymlinks,
		getenv:       os.Getenv,
		crunVersion:  crun.Version,
		javaVersion:  cachedJavaVersion(javaProbeCacheDir, javaVersion, javaInstallKey, time.Now),
		cgroupMode:   cgroupMode,
		javaKey:      javaInstallKey,
		crunKey:      fileKey,
		now:          time.Now,
	}
}

// runtimeInfo is what the fingerprint found, kept for StartTask.
type runtimeInfo struct {
	CrunPath string
	JavaHome string
	JavaErr  error // non-nil when java is missing or not runnable

	javaVersion string    // from the last successful `java -version`
	javaKey     string    // javaInstallKey at that time
	javaProbed  time.Time // when it ran

	crunVersion string    // from the last successful `crun --version`
	crunKey     string    // fileKey of the crun binary at that time
	crunProbed  time.Time // when it ran
}

// fingerprint inspects the host; previous carries the last java home found,
// so that a java binary that vanished is reported as broken, not as absent.
func fingerprint(ctx context.Context, cfg *Config, p probes, previous runtimeInfo) (*drivers.Fingerprint, runtimeInfo) {
	info := runtimeInfo{}
	attrs := map[string]*structs.Attribute{}
	fp := func(h drivers.HealthState, desc string) *drivers.Fingerprint {
		return &drivers.Fingerprint{Health: h, HealthDescription: desc, Attributes: attrs}
	}
	if !p.isRoot() {
		return fp(drivers.HealthStateUndetected, drivers.DriverRequiresRootMessage), info
	}

	if cfg.shim.Path != "" {
		attrs[AttrShim] = structs.NewStringAttribute(cfg.shim.Path)
	}
	crunPath, err := findCrun(cfg.CrunPath, p.lookPath)
	if err != nil {
		return fp(drivers.HealthStateUndetected, err.Error()), info
	}
	info.CrunPath = crunPath
	attrs[AttrCrunPath] = structs.NewStringAttribute(crunPath)

	mode := p.cgroupMode()
	attrs[AttrCgroupMode] = structs.NewStringAttribute(mode)

	deadline := cfg.crunTimeout
	if deadline <= 0 {
		deadline = crun.DefaultTimeout
	}
	// `crun --version` costs ~0.2 s of CPU under emulation, on every fingerprint (each
	// second in the lab): an unchanged binary is asked again only after reprobeAfter.
	crunKey, now := p.crunKey(crunPath), p.now()
	if crunPath == previous.CrunPath && crunKey == previous.crunKey && previous.crunVersion != "" &&
		now.Sub(previous.crunProbed) < reprobeAfter {
		info.crunVersion, info.crunKey, info.crunProbed = previous.crunVersion, crunKey, previous.crunProbed
	} else {
		vctx, cancel := context.WithTimeout(ctx, deadline)
		crunVer, err := p.crunVersion(vctx, crunPath)
		cancel()
		if err != nil {
			return fp(drivers.HealthStateUnhealthy, fmt.Sprintf("crun at %s is not runnable: %s", crunPath, firstLine(err.Error()))), info
		}
		info.crunVersion, info.crunKey, info.crunProbed = crunVer, crunKey, now
	}
	attrs[AttrCrunVersion] = structs.NewStringAttribute(info.crunVersion)

	home, err := findJavaHome(cfg.JavaHome, previous.JavaHome, p)
	if err != nil {
		info.JavaErr = err
		return fp(drivers.HealthStateUnhealthy, err.Error()), info
	}
	info.JavaHome = home
	attrs[AttrJavaHome] = structs.NewStringAttribute(home)
	key := p.javaKey(home)
	if home == previous.JavaHome && key == previous.javaKey && previous.javaVersion != "" &&
		now.Sub(previous.javaProbed) < reprobeAfter {
		info.javaVersion, info.javaKey, info.javaProbed = previous.javaVersion, key, previous.javaProbed
	} else {
		javaVer, err := p.javaVersion(ctx, filepath.Join(home, "bin", "java"))
		if err != nil {
			info.JavaErr = fmt.Errorf("java runtime not usable: %q", firstLine(err.Error()))
			return fp(drivers.HealthStateUnhealthy, info.JavaErr.Error()), info
		}
		info.javaVersion, info.javaKey, info.javaProbed = parseJavaVersion(javaVer), key, now
	}
	attrs[AttrJavaVersion] = structs.NewStringAttribute(info.javaVersion)

	if mode != "v2" {
		return fp(drivers.HealthStateUnhealthy, fmt.Sprintf(
			"cgroup mode is %s: java-crun needs a pure cgroup v2 hierarchy (crun refuses hybrid mode); boot with systemd.unified_cgroup_hierarchy=1", mode)), info
	}
	return fp(drivers.HealthStateHealthy, drivers.DriverHealthy), info
}

func findCrun(configured string, lookPath func(string) (string, error)) (string, error) {
	if strings.Contains(configured, "/") {
		if _, err := lookPath(configured); err != nil {
			return "", fmt.Errorf("crun executable not found at %s", configured)
		}
		return configured, nil
	}
	if p, err := lookPath(configured); err == nil {
		return p, nil
	}
	if _, err := lookPath(fallbackCrunPath); err == nil {
		return fallbackCrunPath, nil
	}
	return "", fmt.Errorf("crun executable not found at %s (searched PATH and %s): install crun or set crun_path", configured, fallbackCrunPath)
}

func findJavaHome(configured, previous string, p probes) (string, error) {
	switch {
	case configured != "":
		return configured, nil
	case p.getenv("JAVA_HOME") != "":
		return p.getenv("JAVA_HOME"), nil
	}
	if javaPath, err := p.lookPath("java"); err == nil {
		if real, err := p.evalSymlinks(javaPath); err == nil && strings.HasSuffix(real, "/bin/java") {
			return strings.TrimSuffix(real, "/bin/java"), nil
		}
	}
	if previous != "" {
		return previous, nil
	}
	return "", errors.New("java not found on PATH and JAVA_HOME is unset: install a JRE (e.g. openjdk-17-jre-headless) or set java_home in the plugin config")
}

// javaVersion runs `java -version`; its error carries the first line of
// the loader's or the JVM's complaint.
func javaVersion(ctx context.Context, javaBin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, javaBin, "-version")
	cmd.SysProcAttr = diesWithPlugin()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if line := firstLine(string(out)); line != "" {
			return "", errors.New(line)
		}
		return "", err
	}
	return firstLine(string(out)), nil
}

// parseJavaVersion turns `openjdk version "17.0.13" 2024-10-15` into 17.0.13.
func parseJavaVersion(line string) string {
	if _, rest, ok := strings.Cut(line, `"`); ok {
		if v, _, ok := strings.Cut(rest, `"`); ok {
			return v
		}
	}
	return line
}

// cgroupMode classifies /sys/fs/cgroup as v2 (unified), hybrid, v1 or none.
func cgroupMode() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return "none"
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if err := unix.Statfs("/sys/fs/cgroup/unified", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid"
	}
	return "v1"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}

// diesWithPlugin makes a probe process die with the plugin, so that a
// killed plugin leaves no `java -version` behind.
func diesWithPlugin() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// fileKey names one state of a file: replaced, rewritten, chmod-ed or gone, it changes.
func fileKey(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d:%d:%d:%o:%d.%d:%d.%d", st.Dev, st.Ino, st.Size, st.Mode,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

// javaInstallKey summarises what a JVM start depends on most: the launcher,
// libjli, libjvm, and the names in the lib directories (so that renaming,
// removing or adding any library there counts). Changing any of them changes
// the key and forces a new `java -version`. libjli is in lib/ (JDK 17 and
// later) or in lib/jli/ (Debian's JDK 11): both are looked at, as the one a
// JDK does not have is "missing" whatever happens.
func javaInstallKey(home string) string {
	var b strings.Builder
	for _, rel := range []string{"bin/java", "lib/libjli.so", "lib/jli/libjli.so", "lib/server/libjvm.so"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(home, rel), &st); err != nil {
			fmt.Fprintf(&b, "%s:missing;", rel)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d:%o:%d.%d;", rel, st.Ino, st.Size, st.Mode, st.Mtim.Sec, st.Mtim.Nsec)
	}
	for _, dir := range []string{"lib", "lib/jli", "lib/server"} {
		entries, _ := os.ReadDir(filepath.Join(home, dir)) // sorted by name
		fmt.Fprintf(&b, "%s:", dir)
		for _, e := range entries {
			b.WriteString(e.Name())
			b.WriteByte(',')
		}
		b.WriteByte(';')
	}
	return b.String()
}
