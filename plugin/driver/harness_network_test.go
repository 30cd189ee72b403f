package driver

// Harness tests of networking and name resolution with real crun: the
// container joins the network namespace Nomad prepared for a group network,
// shares the host's otherwise, and resolves its own hostname and localhost.

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/helper/uuid"
	"github.com/hashicorp/nomad/plugins/drivers"
	"golang.org/x/sys/unix"
)

func netnsInode(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

func TestHarnessGroupNetworkNamespaceAndNames(t *testing.T) {
	requireRuntime(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create a network namespace as Nomad does")
	}
	// (The exec'd process is in the container's namespaces; PID 1, the
	// init, is not dumpable, so its /proc/1/ns is not readable.)
	// What Nomad's network hook does for `network { mode = "none" }` (and,
	// plus CNI, for "bridge"): a named namespace the driver must join.
	name := "jc-test-" + uuid.Generate()[:8]
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	path := "/var/run/netns/" + name

	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 256, nil)
	t.Cleanup(cleanup)
	cfg.NetworkIsolation = &drivers.NetworkIsolationSpec{Mode: drivers.NetIsolationModeGroup, Path: path,
		HostsConfig: &drivers.HostsConfig{Hostname: "api", Address: "10.77.0.2"}}
	cfg.DNS = &drivers.DNSConfig{Servers: []string{"192.0.2.53"}, Searches: []string{"svc.example"}}
	h.start(t, cfg)
	waitRunningJVM(t, h, cfg)

	if out, _ := h.exec(t, cfg, "/bin/readlink", "/proc/self/ns/net"); strings.TrimSpace(out) != netnsInode(t, path) {
		t.Fatalf("container netns %q, want Nomad's %s (%s)", out, path, netnsInode(t, path))
	}
	if out, _ := h.exec(t, cfg, "/bin/hostname"); strings.TrimSpace(out) != "api" {
		t.Errorf("hostname %q, want the group network's", out)
	}
	if out, code := h.exec(t, cfg, "/usr/bin/getent", "hosts", "api"); code != 0 || !strings.HasPrefix(out, "10.77.0.2") {
		t.Errorf("getent hosts api: exit %d %q", code, out)
	}
	if out, _ := h.exec(t, cfg, "/bin/cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 192.0.2.53\nsearch svc.example\n") {
		t.Errorf("resolv.conf without the task's dns block:\n%s", out)
	}
	_ = h.DestroyTask(cfg.ID, true)
}

func TestHarnessHostNetworkResolvesOwnName(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	if out, _ := h.exec(t, cfg, "/bin/readlink", "/proc/self/ns/net"); strings.TrimSpace(out) != netnsInode(t, "/proc/self/ns/net") {
		t.Errorf("host mode: container netns %q, want the host's", out)
	}
	// What InetAddress.getLocalHost() does: gethostname, then NSS.
	out, code := h.exec(t, cfg, "/bin/sh", "-c", "getent hosts $(hostname) && getent hosts localhost")
	if code != 0 || !strings.Contains(out, "127.0.1.1") || !strings.Contains(out, hostname(cfg)) {
		t.Errorf("own name and localhost: exit %d %q", code, out)
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	servers, _, _ := parseResolvConf(hostResolv)
	got, _ := h.exec(t, cfg, "/bin/cat", "/etc/resolv.conf")
	for _, s := range servers {
		if !strings.Contains(got, "nameserver "+s) {
			t.Errorf("resolv.conf lacks the host's nameserver %s:\n%s", s, got)
		}
	}
	_ = h.DestroyTask(cfg.ID, true)
}

func TestHarnessVolumesAndDevice(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 256, nil)
	t.Cleanup(cleanup)
	rw, ro := t.TempDir(), t.TempDir()
	_ = os.WriteFile(ro+"/seed", []byte("from the host\n"), 0o644)
	// volume_mount of two host volumes, and a device as a device plugin
	// would hand it over (loop-control: opening it needs no capability).
	cfg.Mounts = []*drivers.MountConfig{{TaskPath: "/data", HostPath: rw}, {TaskPath: "/ref", HostPath: ro, Readonly: true}}
	cfg.Devices = []*drivers.DeviceConfig{{TaskPath: "/dev/loop-control", HostPath: "/dev/loop-control", Permissions: "r"}}
	h.start(t, cfg)
	waitRunningJVM(t, h, cfg)
	if out, code := h.exec(t, cfg, "/bin/sh", "-c", "echo hi > /data/out && cat /ref/seed"); code != 0 || out != "from the host\n" {
		t.Fatalf("rw/ro volumes: exit %d %q", code, out)
	}
	if got, _ := os.ReadFile(rw + "/out"); string(got) != "hi\n" {
		t.Errorf("write to /data did not reach the host volume: %q", got)
	}
	if _, code := h.exec(t, cfg, "/bin/touch", "/ref/x"); code == 0 {
		t.Error("read-only volume is writable")
	}
	if out, code := h.exec(t, cfg, "/bin/sh", "-c", ": < /dev/loop-control"); code != 0 {
		t.Errorf("device with r: open for reading failed: %s", out)
	}
	if out, code := h.exec(t, cfg, "/bin/sh", "-c", ": > /dev/loop-control"); code == 0 || !strings.Contains(out, "not permitted") {
		t.Errorf("device with r only: open for writing: exit %d %q, want EPERM from the device cgroup", code, out)
	}
	_ = h.DestroyTask(cfg.ID, true)
}
