package driver

import (
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	"github.com/hashicorp/nomad/plugins/drivers/fsisolation"
	"github.com/hashicorp/nomad/plugins/shared/hclspec"

	"github.com/nomad-lab/nomad-driver-java-crun/version"
)

const (
	// PluginName is the driver name jobs use (`driver = "java-crun"`).
	PluginName = "java-crun"
	// handleVersion is the version of the persisted TaskState format.
	handleVersion = 1
	attrPrefix    = "driver." + PluginName + "."
)

func pluginInfo() *base.PluginInfoResponse {
	return &base.PluginInfoResponse{
		Type:              base.PluginTypeDriver,
		PluginApiVersions: []string{drivers.ApiVersion010},
		PluginVersion:     version.Version,
		Name:              PluginName,
	}
}

// configSpec is the agent's `plugin "nomad-driver-java-crun" { config {...} }`.
var configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"crun_path": hclspec.NewDefault(
		hclspec.NewAttr("crun_path", "string", false),
		hclspec.NewLiteral(`"crun"`),
	),
	"state_root": hclspec.NewDefault(
		hclspec.NewAttr("state_root", "string", false),
		hclspec.NewLiteral(`"/run/java-crun"`),
	),
	"java_home": hclspec.NewAttr("java_home", "string", false),
	"shim_path": hclspec.NewAttr("shim_path", "string", false),
	"fingerprint_period": hclspec.NewDefault(
		hclspec.NewAttr("fingerprint_period", "string", false),
		hclspec.NewLiteral(`"30s"`),
	),
	"pids_limit": hclspec.NewDefault(
		hclspec.NewAttr("pids_limit", "number", false),
		hclspec.NewLiteral("4096"),
	),
	"default_user": hclspec.NewDefault(
		hclspec.NewAttr("default_user", "string", false),
		hclspec.NewLiteral(`"nobody"`),
	),
	"crun_timeout": hclspec.NewDefault(
		hclspec.NewAttr("crun_timeout", "string", false),
		hclspec.NewLiteral(`"30s"`),
	),
	"orphan_grace_period": hclspec.NewDefault(
		hclspec.NewAttr("orphan_grace_period", "string", false),
		hclspec.NewLiteral(`"2m"`),
	),
	"allow_caps": hclspec.NewDefault(
		hclspec.NewAttr("allow_caps", "list(string)", false),
		hclspec.NewLiteral(`["audit_write", "chown", "dac_override", "fowner", "fsetid", "kill", "net_bind_service", "setfcap", "setgid", "setpcap", "setuid", "sys_chroot"]`),
	),
	"allow_root": hclspec.NewDefault(
		hclspec.NewAttr("allow_root", "bool", false),
		hclspec.NewLiteral("false"),
	),
	"seccomp": hclspec.NewDefault(
		hclspec.NewAttr("seccomp", "string", false),
		hclspec.NewLiteral(`"default"`),
	),
	"masked_paths": hclspec.NewAttr("masked_paths", "list(string)", false),
})

// taskConfigSpec is the job's `config {...}` block.
var taskConfigSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"jar_path":    hclspec.NewAttr("jar_path", "string", false),
	"class":       hclspec.NewAttr("class", "string", false),
	"class_path":  hclspec.NewAttr("class_path", "list(string)", false),
	"jvm_options": hclspec.NewAttr("jvm_options", "list(string)", false),
	"args":        hclspec.NewAttr("args", "list(string)", false),
	"cap_add":     hclspec.NewAttr("cap_add", "list(string)", false),
	"cap_drop":    hclspec.NewAttr("cap_drop", "list(string)", false),
})

var capabilities = &drivers.Capabilities{
	SendSignals: true,
	Exec:        true, // ExecTask and ExecTaskStreaming (with or without a TTY) via `crun exec`
	// The container gets its own root: the client builds plain task dirs and
	// the driver mounts local/, secrets/ and the alloc dir into it.
	FSIsolation: fsisolation.Image,
	// volume_mount (host and CSI volumes) as bind mounts; see mounts.go.
	MountConfigs: drivers.MountConfigSupportAll,
	// Host: the container shares the host's network namespace (the default).
	// Group: it joins the namespace Nomad prepared for the group's network
	// (mode "bridge" or "none"); Nomad creates it, the driver only joins.
	NetIsolationModes: []drivers.NetIsolationMode{drivers.NetIsolationModeHost, drivers.NetIsolationModeGroup},
}
