package driver

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/nomad/client/allocdir"
	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

const (
	mib        = 1024 * 1024
	maxNoFile  = 65536
	defaultCwd = "/local"
)

// specParams is what the OCI spec depends on beyond the task config.
type specParams struct {
	JavaHome    string
	User        containerUser
	PidsLimit   int64
	CgroupsPath string
	Exists      func(path string) bool // host path exists (following symlinks)
	NoFile      uint64                 // RLIMIT_NOFILE for the JVM
	Security    security
	// InitBinary is the host path of the shim binary, bind-mounted read-only at
	// shim.InitPath to run as the container's PID 1 (see shim/init.go).
	InitBinary string
	// ExtraBinds go after the others (the name files of names.go).
	ExtraBinds []crun.Bind
	// TotalCompute is the node's total MHz (cpu shares are scaled when it
	// exceeds the kernel's range).
	TotalCompute int64
	StatDevice   statDevice // hostDevice, injected for tests
}

// javaCommand is the container's argv: java [jvm_options] -jar JAR [args]
// or java [jvm_options] -cp CP CLASS [args].
func javaCommand(javaHome string, tc *TaskConfig, td *allocdir.TaskDir) ([]string, error) {
	argv := []string{filepath.Join(javaHome, "bin", "java")}
	argv = append(argv, tc.JVMOptions...)
	if tc.JarPath != "" {
		jar, _, err := resolveTaskPath("jar_path", tc.JarPath, td)
		if err != nil {
			return nil, err
		}
		argv = append(argv, "-jar", jar)
	} else {
		cp := make([]string, 0, len(tc.ClassPath))
		for i, entry := range tc.ClassPath {
			c, _, err := resolveTaskPath(fmt.Sprintf("class_path[%d]", i), entry, td)
			if err != nil {
				return nil, err
			}
			cp = append(cp, c)
		}
		argv = append(argv, "-cp", strings.Join(cp, ":"), tc.Class)
	}
	return append(argv, tc.Args...), nil
}

// buildSpecInput assembles the container from the task: read-only system
// dirs and Java home, read-write task dirs, env, user, resources. notes say
// what the driver adjusted (for task events).
func buildSpecInput(cfg *drivers.TaskConfig, tc *TaskConfig, p specParams) (in crun.SpecInput, notes []string, err error) {
	td := cfg.TaskDir()
	argv, err := javaCommand(p.JavaHome, tc, td)
	if err != nil {
		return crun.SpecInput{}, nil, err
	}
	argv = append([]string{shim.InitPath}, argv...)
	in = crun.SpecInput{
		Args:           argv,
		Env:            shim.InitEnv(taskEnv(cfg, p.JavaHome)),
		Cwd:            defaultCwd,
		Hostname:       hostname(cfg),
		UID:            p.User.UID,
		GID:            p.User.GID,
		AdditionalGids: p.User.Groups,
		CgroupsPath:    p.CgroupsPath,
		PidsLimit:      p.PidsLimit,
		NoFile:         p.NoFile,
		Capabilities:   p.Security.Caps,
		Seccomp:        p.Security.Seccomp,
		MaskedPaths:    p.Security.Masked,
	}
	for _, dir := range systemDirs {
		if p.Exists(dir) {
			in.Binds = append(in.Binds, crun.Bind{Source: dir, Destination: dir, ReadOnly: true})
		}
	}
	if !coveredBySystemDirs(p.JavaHome) {
		in.Binds = append(in.Binds, crun.Bind{Source: p.JavaHome, Destination: p.JavaHome, ReadOnly: true})
	}
	for _, dst := range []string{"/local", "/alloc", "/secrets"} {
		in.Binds = append(in.Binds, crun.Bind{Source: taskDirMounts(td)[dst], Destination: dst})
	}
	in.Binds = append(in.Binds, crun.Bind{Source: p.InitBinary, Destination: shim.InitPath, ReadOnly: true})
	in.Binds = append(in.Binds, p.ExtraBinds...)
	volumes, err := volumeBinds(cfg.Mounts, p.Exists)
	if err != nil {
		return crun.SpecInput{}, nil, err
	}
	in.Binds = append(in.Binds, volumes...)
	if in.Devices, err = taskDevices(cfg.Devices, p.StatDevice); err != nil {
		return crun.SpecInput{}, nil, err
	}
	netns, err := networkNamespace(cfg.NetworkIsolation)
	if err != nil {
		return crun.SpecInput{}, nil, err
	}
	in.NetNSPath = netns
	if cfg.Resources != nil {
		in.MemoryLimit, in.MemoryReservation = memoryLimits(cfg.Resources.NomadResources)
		var requested int64
		if lr := cfg.Resources.LinuxResources; lr != nil && lr.CPUShares > 0 {
			requested = lr.CPUShares
		} else if cfg.Resources.NomadResources != nil {
			requested = cfg.Resources.NomadResources.Cpu.CpuShares
		}
		var note string
		if in.CPUShares, note = cpuShares(requested, p.TotalCompute); note != "" {
			notes = append(notes, note)
		}
		in.CpusetCpus = reservedCores(cfg)
	}
	return in, notes, nil
}

// reservedCores is `resources { cores = N }` as Nomad reserved them for the
// task ("1", "0,2"): the container is pinned to exactly those.
func reservedCores(cfg *drivers.TaskConfig) string {
	if cfg.Resources == nil || cfg.Resources.LinuxResources == nil {
		return ""
	}
	return cfg.Resources.LinuxResources.CpusetCpus
}

func coveredBySystemDirs(path string) bool {
	for _, dir := range systemDirs {
		if under(path, dir) {
			return true
		}
	}
	return false
}

// memoryLimits follows Nomad's exec driver: memory is the hard limit, unless
// memory_max is set, then memory_max is the limit and memory the
// reservation (memory.low); memory_max = -1 means no hard limit.
func memoryLimits(r *structs.AllocatedTaskResources) (limit, reservation int64) {
	if r == nil {
		return 0, 0
	}
	mem, max := r.Memory.MemoryMB, r.Memory.MemoryMaxMB
	switch {
	case max == -1:
		return 0, mem * mib
	case max > 0:
		return max * mib, mem * mib
	default:
		return mem * mib, 0
	}
}

// taskEnv is Nomad's task environment plus JAVA_HOME, a PATH that finds
// java, and a UTF-8 locale: without one the JVM decodes arguments and
// encodes output as ASCII, turning "ü" into "??".
func taskEnv(cfg *drivers.TaskConfig, javaHome string) []string {
	env := cfg.EnvList()
	_, lang := cfg.Env["LANG"]
	_, lcAll := cfg.Env["LC_ALL"]
	_, lcCtype := cfg.Env["LC_CTYPE"]
	if !lang && !lcAll && !lcCtype {
		env = append(env, "LANG=C.UTF-8")
	}
	if _, ok := cfg.Env["JAVA_HOME"]; !ok {
		env = append(env, "JAVA_HOME="+javaHome)
	}
	if _, ok := cfg.Env["PATH"]; !ok {
		env = append(env, "PATH="+filepath.Join(javaHome, "bin")+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	return env
}

// networkNamespace is the namespace the container joins: the one Nomad
// prepared for a group network (`network { mode = "bridge" }` or "none"),
// else none of its own (host networking).
func networkNamespace(ni *drivers.NetworkIsolationSpec) (string, error) {
	switch {
	case ni == nil || ni.Mode == drivers.NetIsolationModeHost || ni.Mode == "":
		return "", nil
	case ni.Mode == drivers.NetIsolationModeGroup && ni.Path != "":
		return ni.Path, nil
	default:
		return "", fmt.Errorf("network isolation %q (namespace path %q) is not supported by java-crun: use the group's network mode host, bridge or none", ni.Mode, ni.Path)
	}
}

var hostnameUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// hostname is the group network's hostname (`network { hostname = ... }`),
// else "<task>-<first 8 of alloc id>", a valid DNS label.
func hostname(cfg *drivers.TaskConfig) string {
	if ni := cfg.NetworkIsolation; ni != nil && ni.Mode == drivers.NetIsolationModeGroup && ni.HostsConfig != nil && ni.HostsConfig.Hostname != "" {
		return ni.HostsConfig.Hostname
	}
	name := strings.Trim(hostnameUnsafe.ReplaceAllString(strings.ToLower(cfg.Name), "-"), "-")
	if name == "" {
		name = "task"
	}
	alloc := cfg.AllocID
	if len(alloc) > 8 {
		alloc = alloc[:8]
	}
	if len(name) > 54 {
		name = name[:54]
	}
	return strings.Trim(name+"-"+alloc, "-")
}

var containerIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// containerID derives crun's container id from Nomad's task ID
// ("<alloc id>/<task>/<invocation>"), so it carries the alloc id.
func containerID(cfg *drivers.TaskConfig) string { return containerIDFor(cfg.ID) }

// containerIDFor is containerID from the task ID alone: DestroyTask gets
// nothing else, and must find the container even without a handle.
func containerIDFor(taskID string) string {
	return containerIDUnsafe.ReplaceAllString(strings.ReplaceAll(taskID, "/", "."), "_")
}

// noFileLimit is 65536 open files, or the plugin's own hard limit when lower:
// raising it above that would fail in crun without CAP_SYS_RESOURCE.
func noFileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Max < maxNoFile {
		return rl.Max
	}
	return maxNoFile
}
