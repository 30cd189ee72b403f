package driver

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/plugins/drivers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeNameHost is a host with the given files and symlinks.
func fakeNameHost(files map[string]string, links map[string]string) nameHost {
	return nameHost{
		ReadFile: func(p string) ([]byte, error) {
			if t, ok := links[p]; ok {
				p = t
			}
			if c, ok := files[p]; ok {
				return []byte(c), nil
			}
			return nil, os.ErrNotExist
		},
		EvalSymlinks: func(p string) (string, error) {
			if t, ok := links[p]; ok {
				return t, nil
			}
			return p, nil
		},
	}
}

const stubResolv = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lab.example\n"

func TestNameResolutionHostNetwork(t *testing.T) {
	dir := t.TempDir()
	host := fakeNameHost(map[string]string{"/etc/hosts": "127.0.0.1 localhost\n10.0.0.5 db\n",
		"/etc/resolv.conf": "nameserver 10.255.255.53\nsearch corp\n"}, nil)
	binds, notes, err := nameResolution(dir, testTaskConfig(), "web-0b5d9c2e", host)
	if err != nil || len(notes) != 0 {
		t.Fatal(err, notes)
	}
	hosts, _ := os.ReadFile(filepath.Join(dir, "hosts"))
	if !strings.Contains(string(hosts), "127.0.1.1\tweb-0b5d9c2e\n") || !strings.Contains(string(hosts), "10.0.0.5 db") {
		t.Errorf("hosts:\n%s", hosts)
	}
	resolv, _ := os.ReadFile(filepath.Join(dir, "resolv.conf"))
	if !strings.Contains(string(resolv), "nameserver 10.255.255.53\nsearch corp\n") {
		t.Errorf("resolv.conf:\n%s", resolv)
	}
	want := []string{"/etc/hosts", "/etc/resolv.conf"}
	for i, b := range binds {
		if b.Destination != want[i] || !b.ReadOnly || b.Source != filepath.Join(dir, filepath.Base(want[i])) {
			t.Errorf("bind %+v", b)
		}
	}
}

func TestNameResolutionSystemdResolved(t *testing.T) {
	files := map[string]string{"/run/systemd/resolve/stub-resolv.conf": stubResolv,
		systemdUpstreamResolv: "nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch lab.example\n"}
	links := map[string]string{"/etc/resolv.conf": "/run/systemd/resolve/stub-resolv.conf"}

	// Host network: the stub is reachable, keep it as the host has it; the
	// file goes over the symlink's target, under the container's /run.
	dir := t.TempDir()
	binds, notes, err := nameResolution(dir, testTaskConfig(), "web", fakeNameHost(files, links))
	if err != nil || len(notes) != 0 {
		t.Fatal(err, notes)
	}
	resolv, _ := os.ReadFile(filepath.Join(dir, "resolv.conf"))
	if !strings.Contains(string(resolv), "nameserver 127.0.0.53\n") || !strings.Contains(string(resolv), "options edns0 trust-ad") {
		t.Errorf("host network, resolv.conf:\n%s", resolv)
	}
	if binds[1].Destination != "/run/systemd/resolve/stub-resolv.conf" {
		t.Errorf("resolv.conf bound at %s, want the symlink's target", binds[1].Destination)
	}

	// Own network namespace: 127.0.0.53 is unreachable there.
	cfg := testTaskConfig()
	cfg.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeGroup, Path: "/var/run/netns/x"}
	dir = t.TempDir()
	_, notes, err = nameResolution(dir, cfg, "web", fakeNameHost(files, links))
	if err != nil {
		t.Fatal(err)
	}
	resolv, _ = os.ReadFile(filepath.Join(dir, "resolv.conf"))
	if strings.Contains(string(resolv), "127.0.0.53") || !strings.Contains(string(resolv), "nameserver 192.0.2.1\nnameserver 192.0.2.2\n") {
		t.Errorf("group network, resolv.conf:\n%s", resolv)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "not reachable from the task's network namespace") {
		t.Errorf("notes %q", notes)
	}
}

func TestNameResolutionTaskDNSAndGroupHosts(t *testing.T) {
	cfg := testTaskConfig()
	cfg.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeGroup, Path: "/var/run/netns/x",
		HostsConfig: &drivers.HostsConfig{Hostname: "api", Address: "172.26.64.7"}}
	cfg.DNS = &drivers.DNSConfig{Servers: []string{"192.0.2.53"}, Options: []string{"ndots:2"}}
	dir := t.TempDir()
	host := fakeNameHost(map[string]string{"/etc/resolv.conf": "nameserver 10.1.1.1\nsearch corp\noptions rotate\n"}, nil)
	if _, _, err := nameResolution(dir, cfg, hostname(cfg), host); err != nil {
		t.Fatal(err)
	}
	resolv, _ := os.ReadFile(filepath.Join(dir, "resolv.conf"))
	if got := string(resolv); !strings.Contains(got, "nameserver 192.0.2.53\nsearch corp\noptions ndots:2\n") || strings.Contains(got, "10.1.1.1") {
		t.Errorf("dns block not applied field by field:\n%s", got)
	}
	hosts, _ := os.ReadFile(filepath.Join(dir, "hosts"))
	if !strings.Contains(string(hosts), "172.26.64.7\tapi\n") || hostname(cfg) != "api" {
		t.Errorf("hostname %q, hosts:\n%s", hostname(cfg), hosts)
	}
	if err := validateDNS(&drivers.DNSConfig{Servers: []string{"dns.example"}}); err == nil || !strings.Contains(err.Error(), "not an IP address") {
		t.Errorf("validateDNS: %v", err)
	}
}

func TestSpecNetworkNamespace(t *testing.T) {
	cfg := testTaskConfig()
	cfg.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeGroup, Path: "/var/run/netns/abc"}
	s := buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
	i := slices.IndexFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	if i < 0 || s.Linux.Namespaces[i].Path != "/var/run/netns/abc" {
		t.Fatalf("namespaces %+v: want to join Nomad's group network namespace", s.Linux.Namespaces)
	}
	cfg.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeHost}
	s = buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
	if slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace }) {
		t.Fatal("host mode must share the host's network")
	}
	cfg.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeTask}
	if _, _, err := buildSpecInput(cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams()); err == nil {
		t.Fatal("task network isolation accepted")
	}
	caps := capabilities
	if !caps.HasNetIsolationMode(drivers.NetIsolationModeGroup) || !caps.HasNetIsolationMode(drivers.NetIsolationModeHost) ||
		caps.HasNetIsolationMode(drivers.NetIsolationModeTask) || caps.MustInitiateNetwork {
		t.Fatalf("capabilities %+v: want host and group, Nomad creating the namespace", caps)
	}

}
