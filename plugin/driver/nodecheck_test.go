package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/drivers"
)

// testNode is a driver whose last fingerprint found a healthy crun and java
// in a temp dir; tests then break the node between fingerprint and start.
type testNode struct {
	d        *Driver
	crun     string
	javaHome string
	probed   int // java -version runs
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	dir := t.TempDir()
	n := &testNode{crun: filepath.Join(dir, "crun"), javaHome: filepath.Join(dir, "jdk")}
	writeExe(t, n.crun)
	writeExe(t, filepath.Join(n.javaHome, "bin", "java"))
	n.d = New(hclog.NewNullLogger()).(*Driver)
	t.Cleanup(n.d.Shutdown)
	p := fakeHost()
	p.javaKey = javaInstallKey // the real key: tests change the install on disk
	p.javaVersion = func(context.Context, string) (string, error) {
		n.probed++
		return `openjdk version "17.0.13" 2024-10-15`, nil
	}
	n.d.probes = p
	n.d.cfg.StateRoot = filepath.Join(dir, "state")
	n.d.rt = runtimeInfo{CrunPath: n.crun, JavaHome: n.javaHome, javaKey: javaInstallKey(n.javaHome), javaVersion: "17.0.13"}
	return n
}

func writeExe(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// jarTask is a task whose config is valid; its JAR does not exist, so on a
// healthy node StartTask fails on the JAR (user input), not the node.
func jarTask(t *testing.T) *drivers.TaskConfig {
	t.Helper()
	cfg := &drivers.TaskConfig{ID: "alloc1/main/abcd", AllocID: "alloc1", Name: "main", AllocDir: t.TempDir()}
	if err := cfg.EncodeConcreteDriverConfig(&TaskConfig{JarPath: "local/app.jar"}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestStartTaskErrorClasses(t *testing.T) {
	cases := []struct {
		name        string
		breakNode   func(t *testing.T, n *testNode)
		recoverable bool
		want        []string // substrings of the error
	}{
		{"healthy node, missing JAR: user input", func(*testing.T, *testNode) {}, false,
			[]string{"jar not found at local/app.jar"}},
		{"crun deleted after the fingerprint", func(t *testing.T, n *testNode) { _ = os.Remove(n.crun) }, true,
			[]string{"node problem", "crun at ", "/crun is not usable", "no such file or directory"}},
		{"crun lost its execute bit", func(t *testing.T, n *testNode) { _ = os.Chmod(n.crun, 0o644) }, true,
			[]string{"node problem", "no execute permission (mode 0644)"}},
		{"crun never found", func(t *testing.T, n *testNode) { n.d.rt.CrunPath = "" }, true,
			[]string{"node problem", "crun is not available on this node"}},
		{"java deleted after the fingerprint", func(t *testing.T, n *testNode) {
			_ = os.Remove(filepath.Join(n.javaHome, "bin", "java"))
		}, true, []string{"node problem", "java runtime not usable", "/jdk/bin/java", "no such file or directory"}},
		{"java found broken by the fingerprint", func(t *testing.T, n *testNode) {
			n.d.rt.JavaErr = errors.New(`java runtime not usable: "libjli.so: cannot open shared object file"`)
		}, true, []string{"node problem", "libjli.so"}},
		{"java library broken after the fingerprint", func(t *testing.T, n *testNode) {
			if err := os.MkdirAll(filepath.Join(n.javaHome, "lib"), 0o755); err != nil {
				t.Fatal(err)
			}
			_ = os.WriteFile(filepath.Join(n.javaHome, "lib", "libjli.so.moved"), nil, 0o644)
			n.d.probes.javaVersion = func(context.Context, string) (string, error) {
				return "", errors.New("java: error while loading shared libraries: libjli.so: cannot open shared object file")
			}
		}, true, []string{"node problem", "-version failed", "libjli.so"}},
		{"driver shutting down", func(t *testing.T, n *testNode) { n.d.Shutdown() }, true,
			[]string{"node problem", "shutting down"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newTestNode(t)
			c.breakNode(t, n)
			_, _, err := n.d.StartTask(jarTask(t))
			if err == nil {
				t.Fatal("StartTask succeeded")
			}
			if got := structs.IsRecoverable(err); got != c.recoverable {
				t.Errorf("recoverable = %v, want %v (error: %v)", got, c.recoverable, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestInvalidTaskConfigIsUnrecoverableEvenOnBrokenNode(t *testing.T) {
	n := newTestNode(t)
	_ = os.Remove(n.crun)
	cfg := jarTask(t)
	if err := cfg.EncodeConcreteDriverConfig(&TaskConfig{JarPath: "local/app.jar", JVMOptions: []string{"Xmx64m"}}); err != nil {
		t.Fatal(err)
	}
	_, _, err := n.d.StartTask(cfg)
	if err == nil || structs.IsRecoverable(err) || !strings.Contains(err.Error(), "jvm_options[0]") {
		t.Fatalf("bad jvm_options must fail unrecoverably, whatever the node: %v", err)
	}
}

func TestCheckNodeReprobesJavaOnlyWhenInstallChanged(t *testing.T) {
	n := newTestNode(t)
	if _, err := n.d.checkNode(context.Background(), n.d.runtime()); err != nil || n.probed != 0 {
		t.Fatalf("unchanged install: err %v, %d probes (want none)", err, n.probed)
	}
	if err := os.MkdirAll(filepath.Join(n.javaHome, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(n.javaHome, "lib", "libnew.so"), nil, 0o644)
	if _, err := n.d.checkNode(context.Background(), n.d.runtime()); err != nil || n.probed != 1 {
		t.Fatalf("changed install: err %v, %d probes (want 1)", err, n.probed)
	}
	// The fresh probe is remembered: the next start does not run java again.
	if _, err := n.d.checkNode(context.Background(), n.d.runtime()); err != nil || n.probed != 1 {
		t.Fatalf("after re-probe: err %v, %d probes (want still 1)", err, n.probed)
	}
}

// TestNewValidationsAreUnrecoverable: what the job asks and this node will
// not honour fails the task once, with the field named, before any
// container exists.
func TestNewValidationsAreUnrecoverable(t *testing.T) {
	cases := map[string]func(*drivers.TaskConfig, *TaskConfig){
		"volume_mount destination": func(c *drivers.TaskConfig, _ *TaskConfig) {
			c.Mounts = []*drivers.MountConfig{{TaskPath: "/etc", HostPath: "/tmp"}}
		},
		"device /dev/nope": func(c *drivers.TaskConfig, _ *TaskConfig) {
			c.Devices = []*drivers.DeviceConfig{{TaskPath: "/dev/nope", HostPath: "/dev/nope"}}
		},
		"task dns servers":      func(c *drivers.TaskConfig, _ *TaskConfig) { c.DNS = &drivers.DNSConfig{Servers: []string{"resolver"}} },
		"cap_add CAP_SYS_ADMIN": func(_ *drivers.TaskConfig, tc *TaskConfig) { tc.CapAdd = []string{"sys_admin"} },
		"network isolation \"task\"": func(c *drivers.TaskConfig, _ *TaskConfig) {
			c.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeTask}
		},
	}
	for want, mutate := range cases {
		t.Run(want, func(t *testing.T) {
			n := newTestNode(t)
			cfg := jarTask(t)
			tc := &TaskConfig{JarPath: "local/app.jar"}
			mutate(cfg, tc)
			if err := cfg.EncodeConcreteDriverConfig(tc); err != nil {
				t.Fatal(err)
			}
			_, _, err := n.d.StartTask(cfg)
			if err == nil || structs.IsRecoverable(err) || !strings.Contains(err.Error(), want) {
				t.Fatalf("err %v (recoverable %v), want an unrecoverable error naming %q", err, structs.IsRecoverable(err), want)
			}
		})
	}
}
