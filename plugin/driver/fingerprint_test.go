package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

const jdkHome = "/usr/lib/jvm/java-17-openjdk-amd64"

// fakeHost is a healthy host; tests break one probe at a time.
func fakeHost() probes {
	files := map[string]string{
		"crun":          "/usr/bin/crun",
		"/usr/bin/crun": "/usr/bin/crun",
		"java":          "/usr/bin/java",
	}
	return probes{
		isRoot: func() bool { return true },
		lookPath: func(f string) (string, error) {
			if p, ok := files[f]; ok {
				return p, nil
			}
			return "", os.ErrNotExist
		},
		evalSymlinks: func(p string) (string, error) { return jdkHome + "/bin/java", nil },
		getenv:       func(string) string { return "" },
		crunVersion:  func(context.Context, string) (string, error) { return "1.8.1", nil },
		javaVersion: func(context.Context, string) (string, error) {
			return `openjdk version "17.0.13" 2024-10-15`, nil
		},
		cgroupMode: func() string { return "v2" },
		javaKey:    func(string) string { return "k1" },
		crunKey:    func(string) string { return "c1" },
		now:        func() time.Time { return time.Unix(1000, 0) },
	}
}

func runFingerprint(p probes, cfg *Config) (*drivers.Fingerprint, runtimeInfo) {
	if cfg == nil {
		cfg = defaultConfig()
	}
	return fingerprint(context.Background(), cfg, p, runtimeInfo{})
}

func TestFingerprintHealthy(t *testing.T) {
	fp, rt := runFingerprint(fakeHost(), nil)
	if fp.Health != drivers.HealthStateHealthy {
		t.Fatalf("health %s: %s", fp.Health, fp.HealthDescription)
	}
	want := map[string]string{
		AttrCrunVersion: "1.8.1", AttrJavaVersion: "17.0.13", AttrJavaHome: jdkHome,
		AttrCgroupMode: "v2", AttrCrunPath: "/usr/bin/crun",
	}
	for k, v := range want {
		got, ok := fp.Attributes[k].GetString()
		if !ok || got != v {
			t.Errorf("attribute %s = %q, want %q", k, got, v)
		}
	}
	if rt.JavaHome != jdkHome || rt.CrunPath != "/usr/bin/crun" || rt.JavaErr != nil {
		t.Fatalf("runtime info %+v", rt)
	}
}

func TestFingerprintNamesTheShimTasksStartFrom(t *testing.T) {
	cfg := defaultConfig()
	cfg.shim = shim.Binary{Path: "/opt/nomad/plugins/java-crun.d/java-crun-shim"}
	fp, _ := runFingerprint(fakeHost(), cfg)
	if got, _ := fp.Attributes[AttrShim].GetString(); got != cfg.shim.Path {
		t.Fatalf("attribute %s = %q, want %q", AttrShim, got, cfg.shim.Path)
	}
}

func TestFingerprintCrunMissing(t *testing.T) {
	p := fakeHost()
	p.lookPath = func(string) (string, error) { return "", os.ErrNotExist }
	fp, _ := runFingerprint(p, nil)
	if fp.Health != drivers.HealthStateUndetected || !strings.Contains(fp.HealthDescription, "crun executable not found at crun") {
		t.Fatalf("got %s: %s", fp.Health, fp.HealthDescription)
	}
	cfg := defaultConfig()
	cfg.CrunPath = "/opt/crun/bin/crun"
	fp, _ = runFingerprint(p, cfg)
	if fp.Health != drivers.HealthStateUndetected || fp.HealthDescription != "crun executable not found at /opt/crun/bin/crun" {
		t.Fatalf("got %s: %s", fp.Health, fp.HealthDescription)
	}
}

func TestFingerprintCrunFallbackPath(t *testing.T) {
	p := fakeHost()
	base := p.lookPath
	p.lookPath = func(f string) (string, error) {
		if f == "crun" {
			return "", os.ErrNotExist // not on PATH
		}
		return base(f)
	}
	fp, rt := runFingerprint(p, nil)
	if fp.Health != drivers.HealthStateHealthy || rt.CrunPath != "/usr/bin/crun" {
		t.Fatalf("got %s %q", fp.Health, rt.CrunPath)
	}
}

func TestFingerprintJavaBroken(t *testing.T) {
	cases := map[string]string{
		"libjli missing": jdkHome + "/bin/java: error while loading shared libraries: libjli.so: cannot open shared object file: No such file or directory",
		"binary gone":    "fork/exec " + jdkHome + "/bin/java: no such file or directory",
		"not executable": "fork/exec " + jdkHome + "/bin/java: permission denied",
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			p := fakeHost()
			p.javaVersion = func(context.Context, string) (string, error) {
				return "", errors.New(msg + "\nsecond line")
			}
			fp, rt := runFingerprint(p, nil)
			if fp.Health != drivers.HealthStateUnhealthy {
				t.Fatalf("health %s", fp.Health)
			}
			want := `java runtime not usable: "` + msg + `"`
			if fp.HealthDescription != want {
				t.Fatalf("description %q, want %q", fp.HealthDescription, want)
			}
			if rt.JavaErr == nil {
				t.Fatal("StartTask must see the java error")
			}
		})
	}
}

func TestFingerprintJavaNotFoundKeepsPreviousHome(t *testing.T) {
	p := fakeHost()
	base := p.lookPath
	p.lookPath = func(f string) (string, error) {
		if f == "java" {
			return "", os.ErrNotExist
		}
		return base(f)
	}
	fp, _ := runFingerprint(p, nil)
	if fp.Health != drivers.HealthStateUnhealthy || !strings.Contains(fp.HealthDescription, "java not found") {
		t.Fatalf("got %s: %s", fp.Health, fp.HealthDescription)
	}
	// Once seen, a vanished java is reported through its last home.
	p.javaVersion = func(context.Context, string) (string, error) {
		return "", errors.New("fork/exec " + jdkHome + "/bin/java: no such file or directory")
	}
	fp, _ = fingerprint(context.Background(), defaultConfig(), p, runtimeInfo{JavaHome: jdkHome})
	if !strings.Contains(fp.HealthDescription, "no such file or directory") {
		t.Fatalf("got %s", fp.HealthDescription)
	}
}

func TestFingerprintJavaHomeSources(t *testing.T) {
	p := fakeHost()
	p.getenv = func(k string) string {
		if k == "JAVA_HOME" {
			return "/opt/jdk"
		}
		return ""
	}
	_, rt := runFingerprint(p, nil)
	if rt.JavaHome != "/opt/jdk" {
		t.Fatalf("JAVA_HOME ignored: %q", rt.JavaHome)
	}
	cfg := defaultConfig()
	cfg.JavaHome = "/srv/jre"
	_, rt = runFingerprint(p, cfg)
	if rt.JavaHome != "/srv/jre" {
		t.Fatalf("java_home ignored: %q", rt.JavaHome)
	}
}

func TestFingerprintHybridCgroups(t *testing.T) {
	p := fakeHost()
	p.cgroupMode = func() string { return "hybrid" }
	fp, _ := runFingerprint(p, nil)
	if fp.Health != drivers.HealthStateUnhealthy || !strings.Contains(fp.HealthDescription, "cgroup mode is hybrid") {
		t.Fatalf("got %s: %s", fp.Health, fp.HealthDescription)
	}
}

func TestFingerprintNeedsRoot(t *testing.T) {
	p := fakeHost()
	p.isRoot = func() bool { return false }
	fp, _ := runFingerprint(p, nil)
	if fp.Health != drivers.HealthStateUndetected {
		t.Fatalf("got %s", fp.Health)
	}
}

func TestParseJavaVersion(t *testing.T) {
	if v := parseJavaVersion(`openjdk version "21.0.2" 2024-01-16`); v != "21.0.2" {
		t.Fatal(v)
	}
	if v := parseJavaVersion(`weird`); v != "weird" {
		t.Fatal(v)
	}
}

func TestFingerprintReusesJavaProbeWhileInstallUnchanged(t *testing.T) {
	p := fakeHost()
	runs := 0
	p.javaVersion = func(context.Context, string) (string, error) {
		runs++
		return `openjdk version "17.0.13"`, nil
	}
	clock := time.Unix(1000, 0)
	p.now = func() time.Time { return clock }
	_, rt := runFingerprint(p, nil)
	fp, rt := fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 1 || fp.Health != drivers.HealthStateHealthy {
		t.Fatalf("unchanged install re-probed: runs=%d health=%s", runs, fp.Health)
	}
	if v, _ := fp.Attributes[AttrJavaVersion].GetString(); v != "17.0.13" {
		t.Fatalf("cached version %q", v)
	}
	// A changed install (libjli removed, binary replaced) is probed at once.
	p.javaKey = func(string) string { return "k2" }
	p.javaVersion = func(context.Context, string) (string, error) {
		runs++
		return "", errors.New("java: error while loading shared libraries: libjli.so")
	}
	fp, rt = fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 2 || fp.Health != drivers.HealthStateUnhealthy {
		t.Fatalf("changed install: runs=%d health=%s", runs, fp.Health)
	}
	// Java fixed: healthy again on the next fingerprint.
	p.javaKey = func(string) string { return "k1" }
	p.javaVersion = func(context.Context, string) (string, error) { runs++; return `openjdk version "17.0.13"`, nil }
	fp, rt = fingerprint(context.Background(), defaultConfig(), p, rt)
	if fp.Health != drivers.HealthStateHealthy || runs != 3 {
		t.Fatalf("after fix: runs=%d health=%s", runs, fp.Health)
	}
	// Even an unchanged install is probed again after reprobeAfter.
	clock = clock.Add(reprobeAfter)
	fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 4 {
		t.Fatalf("stale probe not refreshed: runs=%d", runs)
	}
}

func TestFingerprintReusesCrunProbeWhileBinaryUnchanged(t *testing.T) {
	p := fakeHost()
	runs := 0
	p.crunVersion = func(context.Context, string) (string, error) { runs++; return "1.8.1", nil }
	clock := time.Unix(1000, 0)
	p.now = func() time.Time { return clock }
	_, rt := runFingerprint(p, nil)
	fp, rt := fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 1 || fp.Health != drivers.HealthStateHealthy {
		t.Fatalf("unchanged crun re-probed: runs=%d health=%s", runs, fp.Health)
	}
	if v, _ := fp.Attributes[AttrCrunVersion].GetString(); v != "1.8.1" {
		t.Fatalf("cached crun version %q", v)
	}
	// A replaced binary (a wrapper renamed over it, chmod -x) is probed at once.
	p.crunKey = func(string) string { return "c2" }
	p.crunVersion = func(context.Context, string) (string, error) {
		runs++
		return "", errors.New("exec format error")
	}
	fp, rt = fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 2 || fp.Health != drivers.HealthStateUnhealthy ||
		!strings.Contains(fp.HealthDescription, "crun at /usr/bin/crun is not runnable") {
		t.Fatalf("changed crun: runs=%d health=%s %q", runs, fp.Health, fp.HealthDescription)
	}
	// A failed probe is not remembered: the next fingerprint asks again.
	p.crunVersion = func(context.Context, string) (string, error) { runs++; return "1.8.1", nil }
	fp, rt = fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 3 || fp.Health != drivers.HealthStateHealthy {
		t.Fatalf("after fix: runs=%d health=%s", runs, fp.Health)
	}
	// Even an unchanged binary is asked again after reprobeAfter.
	clock = clock.Add(reprobeAfter)
	fingerprint(context.Background(), defaultConfig(), p, rt)
	if runs != 4 {
		t.Fatalf("stale crun probe not refreshed: runs=%d", runs)
	}
}

func TestFileKeyChangesWhenTheFileIsReplacedOrChmodded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crun")
	_ = os.WriteFile(path, []byte("x"), 0o755)
	before := fileKey(path)
	if fileKey(path) != before {
		t.Fatal("key not stable")
	}
	_ = os.Chmod(path, 0o644)
	if fileKey(path) == before {
		t.Fatal("chmod -x did not change the key")
	}
	k := fileKey(path)
	_ = os.WriteFile(path+".new", []byte("y"), 0o755)
	_ = os.Rename(path+".new", path)
	if fileKey(path) == k {
		t.Fatal("a file renamed over it did not change the key")
	}
	_ = os.Remove(path)
	if fileKey(path) != "missing" {
		t.Fatal("a missing file has a key")
	}
}

func TestJavaInstallKeyChangesWhenJDK11sLibjliGoes(t *testing.T) {
	// Debian's openjdk-11 keeps libjli in lib/jli/: a hidden one must change the key, or
	// the start-time check lets a task start a JVM that cannot load (seen on bullseye).
	home := t.TempDir()
	for _, rel := range []string{"bin/java", "lib/jli/libjli.so", "lib/server/libjvm.so"} {
		_ = os.MkdirAll(filepath.Dir(filepath.Join(home, rel)), 0o755)
		_ = os.WriteFile(filepath.Join(home, rel), []byte("x"), 0o755)
	}
	before := javaInstallKey(home)
	_ = os.Rename(filepath.Join(home, "lib/jli/libjli.so"), filepath.Join(home, "lib/jli/libjli.so.lab-hidden"))
	if javaInstallKey(home) == before {
		t.Fatal("hiding lib/jli/libjli.so did not change the key")
	}
}

func TestJavaInstallKeyChangesWhenLibraryGoes(t *testing.T) {
	home := t.TempDir()
	for _, rel := range []string{"bin/java", "lib/libjli.so"} {
		_ = os.MkdirAll(filepath.Dir(filepath.Join(home, rel)), 0o755)
		_ = os.WriteFile(filepath.Join(home, rel), []byte("x"), 0o755)
	}
	before := javaInstallKey(home)
	if javaInstallKey(home) != before {
		t.Fatal("key not stable")
	}
	_ = os.Remove(filepath.Join(home, "lib/libjli.so"))
	if javaInstallKey(home) == before {
		t.Fatal("removing libjli.so did not change the key")
	}
	_ = os.WriteFile(filepath.Join(home, "lib/libjli.so"), []byte("x"), 0o755)
	k := javaInstallKey(home)
	_ = os.WriteFile(filepath.Join(home, "lib/libjava.so"), []byte("x"), 0o755)
	_ = os.Rename(filepath.Join(home, "lib/libjava.so"), filepath.Join(home, "lib/libjava.so.lab-hidden"))
	if javaInstallKey(home) == k {
		t.Fatal("hiding another library in lib/ did not change the key")
	}
	k = javaInstallKey(home)
	_ = os.Chmod(filepath.Join(home, "bin/java"), 0o644)
	if javaInstallKey(home) == k {
		t.Fatal("chmod -x did not change the key")
	}
}
