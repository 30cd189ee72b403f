package crun

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// OCIVersion is the spec version written to config.json. crun 1.8.1 rejects
// runtime-spec v1.3.0's own version ("unknown version specified"); the
// fields used here all exist in 1.0.
const OCIVersion = "1.0.2"

// Bind is a host directory mounted into the container.
type Bind struct {
	Source      string // host path
	Destination string // path in the container
	ReadOnly    bool
	Propagation string // "rprivate", "rslave", "rshared"; "" = crun's default
}

// Device is a host device node given to the container, with the access its
// device cgroup rule allows ("rwm" or a subset).
type Device struct {
	Path         string // in the container
	Type         string // "c" or "b"
	Major, Minor int64
	Access       string
}

// SpecInput is everything the OCI spec depends on; BuildSpec is pure.
type SpecInput struct {
	Args           []string
	Env            []string
	Cwd            string
	Hostname       string
	UID, GID       uint32
	AdditionalGids []uint32
	Binds          []Bind // host system dirs (read-only) and task dirs (read-write)
	CgroupsPath    string // relative to the cgroup2 mount, e.g. /nomad.slice/share.slice/x.scope/java-crun

	MemoryLimit       int64 // bytes; 0 = unlimited
	MemoryReservation int64 // bytes; 0 = none (memory.low on cgroup v2)
	CPUShares         uint64
	CpusetCpus        string // cpuset.cpus, e.g. "1" (the task's reserved cores); "" = inherit
	PidsLimit         int64
	NoFile            uint64

	// Capabilities is the bounding set (and, for root, the effective one);
	// nil means DefaultCapabilities.
	Capabilities []string
	// Seccomp is the syscall filter; nil means none (unconfined).
	Seccomp *specs.LinuxSeccomp
	// MaskedPaths are hidden in addition to the kernel's and EtcSecrets.
	MaskedPaths []string
	// Devices are added to the default ones (null, zero, ...).
	Devices []Device
	// NetNSPath is the network namespace to join (Nomad's group network);
	// "" shares the host's network.
	NetNSPath string
}

// DefaultCapabilities is Docker's (moby's) default set minus NET_RAW (on the
// host network, raw sockets would allow spoofing) and MKNOD (device nodes are
// useless behind the device cgroup). runc's own default (`runc spec`) is
// only AUDIT_WRITE, KILL and NET_BIND_SERVICE.
var DefaultCapabilities = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP",
	"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

// kernelMaskedPaths are runc's defaults.
var kernelMaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
	"/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

// EtcSecrets are the host's secrets under /etc, masked because /etc is bound
// from the host (Java needs its certificates, time zones and passwd) and a
// task running as root holds CAP_DAC_OVERRIDE: without a mask it could read
// password hashes, SSH host keys, TLS keys and the agents' own configs
// (Nomad's, Consul's and Vault's tokens and keys). A file is masked as an
// empty file (/dev/null), a directory as an empty read-only tmpfs; crun
// skips paths that do not exist.
var EtcSecrets = []string{
	"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd",
	"/etc/sudoers", "/etc/sudoers.d",
	"/etc/ssh", "/etc/ssl/private", "/etc/pki/tls/private", "/etc/letsencrypt",
	"/etc/nomad.d", "/etc/nomad", "/etc/consul.d", "/etc/consul", "/etc/vault.d", "/etc/vault",
	"/etc/docker", "/etc/kubernetes", "/etc/wireguard", "/etc/openvpn",
	"/etc/ipsec.secrets", "/etc/ipsec.d/private", "/etc/NetworkManager/system-connections",
	"/etc/krb5.keytab", "/etc/ppp/chap-secrets", "/etc/ppp/pap-secrets",
}

// maskedPaths is the spec's list: the kernel's, EtcSecrets, then extra.
func maskedPaths(extra []string) []string {
	out := append(append(slices.Clone(kernelMaskedPaths), EtcSecrets...), extra...)
	slices.Sort(out)
	return slices.Compact(out)
}

// readonlyPaths are runc's defaults.

var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// BuildSpec returns the container's OCI config: a read-only root filesystem
// (bundle/rootfs, empty) assembled from bind mounts, its own pid, mount,
// ipc, uts and cgroup namespaces, and the host network or the network
// namespace at NetNSPath.
func BuildSpec(in SpecInput) *specs.Spec {
	caps := slices.Clone(in.Capabilities)
	if caps == nil {
		caps = slices.Clone(DefaultCapabilities)
	}
	processCaps := &specs.LinuxCapabilities{Bounding: caps}
	if in.UID == 0 {
		// A non-root process loses permitted caps at execve anyway; only
		// root gets them effective.
		processCaps.Effective = caps
		processCaps.Permitted = caps
	}
	spec := &specs.Spec{
		Version:  OCIVersion,
		Hostname: in.Hostname,
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Args:            in.Args,
			Env:             in.Env,
			Cwd:             in.Cwd,
			User:            specs.User{UID: in.UID, GID: in.GID, AdditionalGids: in.AdditionalGids},
			Capabilities:    processCaps,
			NoNewPrivileges: true,
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: in.NoFile, Soft: in.NoFile},
				{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
			},
		},
		Mounts: append(systemMounts(), bindMounts(in.Binds)...),
		Linux: &specs.Linux{
			CgroupsPath: in.CgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.CgroupNamespace},
			},
			Resources:     resources(in),
			Devices:       append(devices(), taskDevices(in.Devices)...),
			MaskedPaths:   maskedPaths(in.MaskedPaths),
			Seccomp:       in.Seccomp,
			ReadonlyPaths: readonlyPaths,
		},
	}
	if in.NetNSPath != "" {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: in.NetNSPath})
	}
	return spec
}

func systemMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		// /run of its own: the target of a host /etc/resolv.conf symlink
		// (systemd-resolved) is mounted there, see driver/names.go.
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "mode=755", "size=16m"}},
	}
}

func bindMounts(binds []Bind) []specs.Mount {
	mounts := make([]specs.Mount, 0, len(binds))
	for _, b := range binds {
		opts := []string{"bind", "nosuid", "nodev"}
		if b.ReadOnly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		if b.Propagation != "" {
			opts = append(opts, b.Propagation)
		}
		mounts = append(mounts, specs.Mount{Destination: b.Destination, Type: "bind", Source: b.Source, Options: opts})
	}
	return mounts
}

func resources(in SpecInput) *specs.LinuxResources {
	r := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	for _, d := range devices() {
		major, minor := d.Major, d.Minor
		r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: "rwm"})
	}
	ptsMajor := int64(136)
	r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &ptsMajor, Access: "rwm"})
	for _, d := range in.Devices {
		major, minor := d.Major, d.Minor
		r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: d.Access})
	}

	if in.MemoryLimit > 0 || in.MemoryReservation > 0 {
		r.Memory = &specs.LinuxMemory{}
		if in.MemoryLimit > 0 {
			limit := in.MemoryLimit
			swap := in.MemoryLimit // swap = limit: no swap beyond memory, OOM is predictable
			r.Memory.Limit, r.Memory.Swap = &limit, &swap
		}
		if in.MemoryReservation > 0 {
			reservation := in.MemoryReservation
			r.Memory.Reservation = &reservation
		}
	}
	if in.CPUShares > 0 || in.CpusetCpus != "" {
		r.CPU = &specs.LinuxCPU{Cpus: in.CpusetCpus}
	}
	if in.CPUShares > 0 {
		shares := in.CPUShares // crun converts shares to cpu.weight on cgroup v2
		r.CPU.Shares = &shares
	}
	if in.PidsLimit > 0 {
		limit := in.PidsLimit
		r.Pids = &specs.LinuxPids{Limit: &limit}
	}
	return r
}

func devices() []specs.LinuxDevice {
	mode := os.FileMode(0o666)
	uid, gid := uint32(0), uint32(0)
	dev := func(path string, major, minor int64) specs.LinuxDevice {
		return specs.LinuxDevice{Path: path, Type: "c", Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid}
	}
	return []specs.LinuxDevice{
		dev("/dev/null", 1, 3), dev("/dev/zero", 1, 5), dev("/dev/full", 1, 7),
		dev("/dev/random", 1, 8), dev("/dev/urandom", 1, 9), dev("/dev/tty", 5, 0),
	}
}

func taskDevices(devs []Device) []specs.LinuxDevice {
	mode := os.FileMode(0o666) // access is the device cgroup's to decide
	uid, gid := uint32(0), uint32(0)
	var out []specs.LinuxDevice
	for _, d := range devs {
		out = append(out, specs.LinuxDevice{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor, FileMode: &mode, UID: &uid, GID: &gid})
	}
	return out
}

// WriteBundle creates bundle/rootfs (empty: everything is mounted) and
// writes bundle/config.json.
func WriteBundle(bundle string, spec *specs.Spec) error {
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		return fmt.Errorf("create bundle %s: %w", bundle, err)
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode OCI spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return fmt.Errorf("write %s/config.json: %w", bundle, err)
	}
	return nil
}
