package driver

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/plugins/drivers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSpecVolumeMounts(t *testing.T) {
	cfg := testTaskConfig()
	cfg.Mounts = []*drivers.MountConfig{
		{TaskPath: "/data", HostPath: "/srv/vol-rw"},
		{TaskPath: "/ref", HostPath: "/srv/vol-ro", Readonly: true, PropagationMode: "host-to-task"},
	}
	s := buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, testParams())
	rw, ro := mountAt(s, "/data"), mountAt(s, "/ref")
	if rw == nil || rw.Source != "/srv/vol-rw" || !slices.Contains(rw.Options, "rw") || !slices.Contains(rw.Options, "rprivate") {
		t.Errorf("read-write volume %+v", rw)
	}
	if ro == nil || !slices.Contains(ro.Options, "ro") || !slices.Contains(ro.Options, "rslave") {
		t.Errorf("read-only volume %+v", ro)
	}
	if cap := capabilities.MountConfigs; cap != drivers.MountConfigSupportAll {
		t.Errorf("MountConfigs %v: volume_mount would be refused by Nomad", cap)
	}
}

func TestVolumeMountsRefusedNamingTheField(t *testing.T) {
	exists := func(p string) bool { return p == "/srv/v" || p == "/usr/share/x" }
	cases := map[string]*drivers.MountConfig{
		`must be an absolute path`:                {TaskPath: "data", HostPath: "/srv/v"},
		`would cover the container's /etc`:        {TaskPath: "/etc", HostPath: "/srv/v"},
		`inside the container's read-only /usr`:   {TaskPath: "/usr/lib/app", HostPath: "/srv/v"},
		`selinux_label "z"`:                       {TaskPath: "/data", HostPath: "/srv/v", SELinuxLabel: "z"},
		`host path "/srv/missing" does not exist`: {TaskPath: "/data", HostPath: "/srv/missing"},
		`propagation_mode "shared"`:               {TaskPath: "/data", HostPath: "/srv/v", PropagationMode: "shared"},
	}
	for want, m := range cases {
		_, err := volumeBinds([]*drivers.MountConfig{m}, exists)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "volume_mount") {
			t.Errorf("%+v: err %v, want %q naming volume_mount", m, err, want)
		}
	}
	if b, err := volumeBinds([]*drivers.MountConfig{{TaskPath: "/usr/share/x", HostPath: "/srv/v"}}, exists); err != nil || len(b) != 1 {
		t.Errorf("an existing mount point inside /usr must be allowed: %v", err)
	}
}

func TestSpecDevices(t *testing.T) {
	stat := func(p string) (string, int64, int64, error) {
		if p == "/dev/fuse" {
			return "c", 10, 229, nil
		}
		return "", 0, 0, errors.New("no such device")
	}
	cfg := testTaskConfig()
	cfg.Devices = []*drivers.DeviceConfig{{TaskPath: "/dev/fuse", HostPath: "/dev/fuse", Permissions: "rw"}}
	p := testParams()
	p.StatDevice = stat
	s := buildTestSpec(t, cfg, &TaskConfig{JarPath: "local/app.jar"}, p)
	if !slices.ContainsFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/fuse" && d.Major == 10 && d.Minor == 229 }) {
		t.Errorf("device node missing: %+v", s.Linux.Devices)
	}
	rules := s.Linux.Resources.Devices
	if last := rules[len(rules)-1]; !last.Allow || *last.Major != 10 || *last.Minor != 229 || last.Access != "rw" {
		t.Errorf("cgroup rule %+v", last)
	}
	for want, d := range map[string]*drivers.DeviceConfig{
		"no such device":        {TaskPath: "/dev/x", HostPath: "/dev/x"},
		`permissions "rwx"`:     {TaskPath: "/dev/fuse", HostPath: "/dev/fuse", Permissions: "rwx"},
		"devices go under /dev": {TaskPath: "/fuse", HostPath: "/dev/fuse"},
	} {
		if _, err := taskDevices([]*drivers.DeviceConfig{d}, stat); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: err %v, want %q", d, err, want)
		}
	}
}
