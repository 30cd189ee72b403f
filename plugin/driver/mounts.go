package driver

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/nomad/plugins/drivers"
	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// Volumes (`volume_mount` of host or CSI volumes) arrive as cfg.Mounts and
// devices (device plugins) as cfg.Devices. Whatever cannot be honoured is
// refused at validation, naming the field: a job must never run without
// the volume or device it asked for.

// reservedDestinations cannot be covered by a volume: the container's
// root, its system dirs and kernel file systems.
var reservedDestinations = []string{"/", "/proc", "/sys", "/dev", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/local", "/alloc", "/secrets", "/run", "/.java-crun"}

// propagation maps Nomad's propagation_mode to mount options.
var propagation = map[string]string{"": "rprivate", "private": "rprivate", "host-to-task": "rslave", "bidirectional": "rshared"}

// volumeBinds turns the task's mounts into binds, or refuses them. exists
// reports whether a host path exists (a destination inside a read-only
// system dir must, as crun cannot create a mount point there).
func volumeBinds(mounts []*drivers.MountConfig, exists func(string) bool) ([]crun.Bind, error) {
	var binds []crun.Bind
	for _, m := range mounts {
		if m == nil {
			continue
		}
		field := fmt.Sprintf("volume_mount destination %q", m.TaskPath)
		dst := filepath.Clean(m.TaskPath)
		switch {
		case !filepath.IsAbs(m.TaskPath):
			return nil, fmt.Errorf("%s must be an absolute path in the container, e.g. /data", field)
		case containsString(reservedDestinations, dst):
			return nil, fmt.Errorf("%s would cover the container's %s: choose another path, e.g. /data", field, dst)
		case coveredBySystemDirs(dst) && !exists(dst):
			return nil, fmt.Errorf("%s is inside the container's read-only %s, where no mount point can be created: choose a path outside the host's system dirs, e.g. /data", field, systemDirOf(dst))
		case m.SELinuxLabel != "":
			return nil, fmt.Errorf("volume_mount selinux_label %q for %s: java-crun does not relabel volumes; remove selinux_label", m.SELinuxLabel, m.TaskPath)
		case !filepath.IsAbs(m.HostPath) || !exists(m.HostPath):
			return nil, fmt.Errorf("%s: host path %q does not exist on this node", field, m.HostPath)
		}
		prop, ok := propagation[m.PropagationMode]
		if !ok {
			return nil, fmt.Errorf("volume_mount propagation_mode %q for %s: use private, host-to-task or bidirectional", m.PropagationMode, m.TaskPath)
		}
		binds = append(binds, crun.Bind{Source: m.HostPath, Destination: dst, ReadOnly: m.Readonly, Propagation: prop})
	}
	return binds, nil
}

func systemDirOf(p string) string {
	for _, dir := range systemDirs {
		if under(p, dir) {
			return dir
		}
	}
	return p
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// statDevice reads a host device node's type and numbers (injected for tests).
type statDevice func(path string) (typ string, major, minor int64, err error)

func hostDevice(path string) (string, int64, int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", 0, 0, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return "c", int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev)), nil
	case unix.S_IFBLK:
		return "b", int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev)), nil
	}
	return "", 0, 0, fmt.Errorf("%s is not a device node", path)
}

// taskDevices turns the task's devices into device nodes plus cgroup rules.
func taskDevices(devs []*drivers.DeviceConfig, stat statDevice) ([]crun.Device, error) {
	var out []crun.Device
	for _, d := range devs {
		if d == nil {
			continue
		}
		typ, major, minor, err := stat(d.HostPath)
		if err != nil {
			return nil, fmt.Errorf("device %s: host path: %v", d.TaskPath, err)
		}
		perms := d.Permissions
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return nil, fmt.Errorf("device %s: permissions %q: use a combination of r, w and m", d.TaskPath, d.Permissions)
		}
		if !filepath.IsAbs(d.TaskPath) || !under(filepath.Clean(d.TaskPath), "/dev") {
			return nil, fmt.Errorf("device task path %q: devices go under /dev in the container", d.TaskPath)
		}
		out = append(out, crun.Device{Path: filepath.Clean(d.TaskPath), Type: typ, Major: major, Minor: minor, Access: perms})
	}
	return out, nil
}
