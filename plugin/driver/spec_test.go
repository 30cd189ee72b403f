package driver

import (
	"os/user"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/drivers"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

func testTaskConfig() *drivers.TaskConfig {
	return &drivers.TaskConfig{
		ID:       "0b5d9c2e-1111-2222-3333-444455556666/web/abcd1234",
		AllocID:  "0b5d9c2e-1111-2222-3333-444455556666",
		Name:     "web",
		AllocDir: "/var/nomad/alloc/0b5d9c2e",
		Env:      map[string]string{"NOMAD_TASK_DIR": "/local", "GREETING": "hi"},
		Resources: &drivers.Resources{
			NomadResources: &structs.AllocatedTaskResources{
				Memory: structs.AllocatedMemoryResources{MemoryMB: 256},
				Cpu:    structs.AllocatedCpuResources{CpuShares: 500},
			},
			LinuxResources: &drivers.LinuxResources{CPUShares: 500},
		},
	}
}

func testParams() specParams {
	return specParams{
		JavaHome:    jdkHome,
		User:        containerUser{UID: 65534, GID: 65534},
		PidsLimit:   4096,
		NoFile:      1024,
		CgroupsPath: "/java-crun/x/container",
		Exists:      func(p string) bool { return p != "/lib64" && p != "/sbin" },
		InitBinary:  "/opt/nomad/plugins/nomad-driver-java-crun",
	}
}

func buildTestSpec(t *testing.T, cfg *drivers.TaskConfig, tc *TaskConfig, p specParams) *specs.Spec {
	t.Helper()
	in, _, err := buildSpecInput(cfg, tc, p)
	if err != nil {
		t.Fatal(err)
	}
	return crun.BuildSpec(in)
}

func mountAt(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func TestSpecCommand(t *testing.T) {
	cases := []struct {
		name string
		tc   TaskConfig
		want []string
	}{
		{"jar", TaskConfig{JarPath: "local/app.jar", JVMOptions: []string{"-Xmx64m"}, Args: []string{"a b", "c"}},
			[]string{jdkHome + "/bin/java", "-Xmx64m", "-jar", "/local/app.jar", "a b", "c"}},
		{"absolute jar in alloc dir", TaskConfig{JarPath: "/alloc/data/app.jar"},
			[]string{jdkHome + "/bin/java", "-jar", "/alloc/data/app.jar"}},
		{"class", TaskConfig{Class: "com.example.Main", ClassPath: []string{"local/app.jar", "local/lib/*", "/usr/share/java/x.jar"}},
			[]string{jdkHome + "/bin/java", "-cp", "/local/app.jar:/local/lib/*:/usr/share/java/x.jar", "com.example.Main"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := buildTestSpec(t, testTaskConfig(), &c.tc, testParams())
			// The init runs java as its child (see shim/init.go).
			c.want = append([]string{shim.InitPath}, c.want...)
			if !slices.Equal(s.Process.Args, c.want) {
				t.Fatalf("args %q, want %q", s.Process.Args, c.want)
			}
		})
	}
}

func TestSpecRejectsPathsOutsideContainer(t *testing.T) {
	for _, p := range []string{"../../etc/shadow-app.jar", "app.jar", "/root/app.jar", "/var/tmp/x.jar"} {
		_, _, err := buildSpecInput(testTaskConfig(), &TaskConfig{JarPath: p}, testParams())
		if err == nil || !strings.Contains(err.Error(), "jar_path") {
			t.Errorf("jar_path %q: err = %v", p, err)
		}
	}
}

func TestSpecMounts(t *testing.T) {
	s := buildTestSpec(t, testTaskConfig(), &TaskConfig{JarPath: "local/app.jar"}, testParams())
	if !s.Root.Readonly || s.Root.Path != "rootfs" {
		t.Fatalf("root %+v", s.Root)
	}
	for _, dir := range []string{"/usr", "/lib", "/bin", "/etc"} {
		m := mountAt(s, dir)
		if m == nil || m.Source != dir || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "bind") {
			t.Errorf("%s: %+v, want a read-only bind of the host's %s", dir, m, dir)
		}
	}
	for _, absent := range []string{"/lib64", "/sbin", jdkHome} {
		if m := mountAt(s, absent); m != nil {
			t.Errorf("unexpected mount %s (absent on host or covered by /usr)", absent)
		}
	}
	task := map[string]string{
		"/local":   "/var/nomad/alloc/0b5d9c2e/web/local",
		"/secrets": "/var/nomad/alloc/0b5d9c2e/web/secrets",
		"/alloc":   "/var/nomad/alloc/0b5d9c2e/alloc",
	}
	for dst, src := range task {
		m := mountAt(s, dst)
		if m == nil || m.Source != src || !slices.Contains(m.Options, "rw") {
			t.Errorf("%s: %+v, want a read-write bind of %s", dst, m, src)
		}
	}
	kinds := map[string]string{"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
		"/dev/mqueue": "mqueue", "/sys": "sysfs", "/tmp": "tmpfs", "/sys/fs/cgroup": "cgroup"}
	for dst, typ := range kinds {
		if m := mountAt(s, dst); m == nil || m.Type != typ {
			t.Errorf("%s: %+v, want type %s", dst, m, typ)
		}
	}
	if m := mountAt(s, "/sys"); !slices.Contains(m.Options, "ro") {
		t.Error("/sys must be read-only")
	}
	if m := mountAt(s, shim.InitPath); m == nil || m.Source != "/opt/nomad/plugins/nomad-driver-java-crun" ||
		!slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "noexec") || s.Process.Args[0] != shim.InitPath {
		t.Errorf("init: mount %+v, argv[0] %q: want the driver binary read-only at %s, run as PID 1", m, s.Process.Args[0], shim.InitPath)
	}
}

func TestSpecJavaHomeOutsideUsrIsMounted(t *testing.T) {
	p := testParams()
	p.JavaHome = "/opt/jdk-21"
	s := buildTestSpec(t, testTaskConfig(), &TaskConfig{JarPath: "local/app.jar"}, p)
	m := mountAt(s, "/opt/jdk-21")
	if m == nil || !slices.Contains(m.Options, "ro") {
		t.Fatalf("java home mount %+v", m)
	}
	if s.Process.Args[1] != "/opt/jdk-21/bin/java" {
		t.Fatal(s.Process.Args[1])
	}
}

func TestSpecNamespacesAndSecurity(t *testing.T) {
	s := buildTestSpec(t, testTaskConfig(), &TaskConfig{JarPath: "local/app.jar"}, testParams())
	var got []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		got = append(got, ns.Type)
		if ns.Path != "" {
			t.Errorf("namespace %s joins %s, want a new one", ns.Type, ns.Path)
		}
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %s namespace", want)
		}
	}
	if slices.Contains(got, specs.NetworkNamespace) {
		t.Error("the task must share the host network")
	}
	if !s.Process.NoNewPrivileges {
		t.Error("no_new_privileges not set")
	}
	if slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") || slices.Contains(s.Process.Capabilities.Bounding, "CAP_NET_RAW") {
		t.Errorf("dangerous capability in %v", s.Process.Capabilities.Bounding)
	}
	if len(s.Process.Capabilities.Effective) != 0 {
		t.Error("a non-root task must not get effective capabilities")
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Error("runc's masked/readonly paths missing")
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/etc/shadow") || !slices.Contains(s.Linux.MaskedPaths, "/etc/ssh") {
		t.Error("the host's secrets under /etc are not masked")
	}
	if s.Hostname != "web-0b5d9c2e" {
		t.Errorf("hostname %q", s.Hostname)
	}
}

func TestSpecProcessEnvUserCwd(t *testing.T) {
	s := buildTestSpec(t, testTaskConfig(), &TaskConfig{JarPath: "local/app.jar"}, testParams())
	for _, want := range []string{"GREETING=hi", "NOMAD_TASK_DIR=/local", "JAVA_HOME=" + jdkHome, "LANG=C.UTF-8"} {
		if !slices.Contains(s.Process.Env, want) {
			t.Errorf("env lacks %s: %v", want, s.Process.Env)
		}
	}
	if s.Process.User.UID != 65534 || s.Process.User.GID != 65534 {
		t.Errorf("user %+v", s.Process.User)
	}
	if s.Process.Cwd != "/local" {
		t.Errorf("cwd %q", s.Process.Cwd)
	}
	cfg := testTaskConfig()
	cfg.Env["JAVA_HOME"] = "/custom"
	cfg.Env["LC_ALL"] = "de_DE.UTF-8"
	s = buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
	if !slices.Contains(s.Process.Env, "JAVA_HOME=/custom") || slices.Contains(s.Process.Env, "JAVA_HOME="+jdkHome) {
		t.Errorf("task JAVA_HOME overridden: %v", s.Process.Env)
	}
	if slices.Contains(s.Process.Env, "LANG=C.UTF-8") {
		t.Errorf("task locale overridden: %v", s.Process.Env)
	}
}

func TestSpecResources(t *testing.T) {
	cases := []struct {
		name               string
		memory, max        int64
		limit, reservation int64
	}{
		{"memory is the limit", 256, 0, 256 * mib, 0},
		{"memory_max is the limit, memory the reservation", 256, 512, 512 * mib, 256 * mib},
		{"memory_max -1: no limit", 256, -1, 0, 256 * mib},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testTaskConfig()
			cfg.Resources.NomadResources.Memory = structs.AllocatedMemoryResources{MemoryMB: c.memory, MemoryMaxMB: c.max}
			s := buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
			r := s.Linux.Resources
			var limit, reservation int64
			if r.Memory != nil && r.Memory.Limit != nil {
				limit = *r.Memory.Limit
				if *r.Memory.Swap != limit {
					t.Errorf("swap %d, want = limit (no swap)", *r.Memory.Swap)
				}
			}
			if r.Memory != nil && r.Memory.Reservation != nil {
				reservation = *r.Memory.Reservation
			}
			if limit != c.limit || reservation != c.reservation {
				t.Errorf("limit %d reservation %d, want %d %d", limit, reservation, c.limit, c.reservation)
			}
		})
	}
	s := buildTestSpec(t, testTaskConfig(), &TaskConfig{JarPath: "local/app.jar"}, testParams())
	if *s.Linux.Resources.CPU.Shares != 500 || *s.Linux.Resources.Pids.Limit != 4096 {
		t.Errorf("cpu %+v pids %+v", s.Linux.Resources.CPU, s.Linux.Resources.Pids)
	}
	if s.Linux.CgroupsPath != "/java-crun/x/container" {
		t.Errorf("cgroupsPath %q", s.Linux.CgroupsPath)
	}
}

func TestContainerIDAndCgroup(t *testing.T) {
	cfg := testTaskConfig()
	id := containerID(cfg)
	if id != "0b5d9c2e-1111-2222-3333-444455556666.web.abcd1234" {
		t.Fatalf("id %q", id)
	}
	if got := taskCgroup(cfg, id); got != "/sys/fs/cgroup/java-crun/"+id {
		t.Errorf("fallback cgroup %q", got)
	}
	cfg.Resources.LinuxResources.CpusetCgroupPath = "/sys/fs/cgroup/nomad.slice/share.slice/a.web.scope"
	if got := taskCgroup(cfg, id); got != "/sys/fs/cgroup/nomad.slice/share.slice/a.web.scope" {
		t.Errorf("nomad cgroup %q", got)
	}
	if got := crunCgroupsPath("/sys/fs/cgroup/nomad.slice/x/container"); got != "/nomad.slice/x/container" {
		t.Errorf("cgroupsPath %q", got)
	}
}

func TestResolveUser(t *testing.T) {
	cu, err := resolveUser("1000:1001", nil, nil)
	if err != nil || cu.UID != 1000 || cu.GID != 1001 {
		t.Fatalf("%+v %v", cu, err)
	}
	if _, err := resolveUser("no-such-user-xyz", hostLookupFail, nil); err == nil || !strings.Contains(err.Error(), "no-such-user-xyz") {
		t.Fatalf("err %v", err)
	}
	cu, err = hostUser("root")
	if err != nil || cu.UID != 0 {
		t.Fatalf("root: %+v %v", cu, err)
	}
}

func hostLookupFail(name string) (*user.User, error) { return nil, user.UnknownUserError(name) }
