package driver

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

func TestTaskCapabilities(t *testing.T) {
	allow, _ := normalizeCaps("allow_caps", append(defaultAllowCaps(), "mknod", "CAP_NET_RAW"))
	cases := []struct {
		name      string
		allow     []string
		add, drop []string
		want      []string // nil: the default set
		err       string
	}{
		{"default", allow, nil, nil, nil, ""},
		{"cap_add within allow_caps, any spelling", allow, []string{"mknod", "CAP_NET_RAW"}, nil,
			append(slices.Clone(crun.DefaultCapabilities), "CAP_MKNOD", "CAP_NET_RAW"), ""},
		{"cap_add outside allow_caps", allow, []string{"sys_admin"}, nil, nil,
			`cap_add CAP_SYS_ADMIN is not allowed on this node: the plugin's allow_caps does not list "sys_admin"; add it to allow_caps`},
		{"cap_add of a typo", allow, []string{"net_rawr"}, nil, nil, `cap_add: unknown capability "net_rawr"`},
		{"cap_drop", allow, nil, []string{"chown", "KILL"}, without(crun.DefaultCapabilities, "CAP_CHOWN", "CAP_KILL"), ""},
		{"cap_drop all", allow, nil, []string{"all"}, []string{}, ""},
		{"a narrower allow_caps narrows the default", []string{"CAP_KILL", "CAP_CHOWN"}, nil, nil, []string{"CAP_CHOWN", "CAP_KILL"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := taskCapabilities(c.allow, c.add, c.drop)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			want := c.want
			if want == nil {
				want = crun.DefaultCapabilities
			}
			want = slices.Sorted(slices.Values(want))
			if err != nil || !slices.Equal(got, want) || got == nil {
				t.Fatalf("got %v %v, want %v", got, err, want)
			}
		})
	}
}

func without(caps []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return slices.Contains(drop, c) })
}

func TestCheckRoot(t *testing.T) {
	c := defaultConfig()
	if err := checkRoot(c, "root", 0); err == nil || !strings.Contains(err.Error(), "allow_root = true") {
		t.Fatalf("root allowed by default: %v", err)
	}
	if err := checkRoot(c, "0:0", 0); err == nil || !strings.Contains(err.Error(), `"0:0" is root`) {
		t.Fatalf("uid 0 by number allowed: %v", err)
	}
	if err := checkRoot(c, "nobody", 65534); err != nil {
		t.Fatal(err)
	}
	c.AllowRoot = true
	if err := checkRoot(c, "root", 0); err != nil {
		t.Fatal(err)
	}
}

func TestTaskSecurityMasksAndSeccomp(t *testing.T) {
	c := defaultConfig()
	c.MaskedPaths = []string{"/etc/myapp/token"}
	glob := func(p string) ([]string, error) {
		if p == "/etc/*/*/*-key.pem" {
			return []string{"/etc/myapp/tls/server-key.pem", "/etc/nomad.d/tls/agent-key.pem"}, nil
		}
		return nil, nil
	}
	sec, err := taskSecurity(c, &TaskConfig{CapAdd: nil}, glob)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(sec.Masked, "/etc/myapp/token") || !slices.Contains(sec.Masked, "/etc/myapp/tls/server-key.pem") {
		t.Errorf("masked %v lacks the operator's path or a found key", sec.Masked)
	}
	if slices.Contains(sec.Masked, "/etc/nomad.d/tls/agent-key.pem") {
		t.Error("a key inside a masked directory cannot be mounted over (the dir is an empty tmpfs)")
	}
	if sec.Seccomp == nil {
		t.Fatal("no seccomp profile by default")
	}
	c.Seccomp = "unconfined"
	if sec, _ = taskSecurity(c, &TaskConfig{}, glob); sec.Seccomp != nil {
		t.Fatal("unconfined still filtered")
	}
	s := buildTestSpec(t, testTaskConfig(), &TaskConfig{JarPath: "local/app.jar"}, withSecurity(testParams(), sec))
	for _, p := range []string{"/etc/shadow", "/etc/sudoers", "/etc/nomad.d", "/etc/vault.d", "/etc/ssl/private", "/etc/myapp/token"} {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			t.Errorf("%s not masked", p)
		}
	}
}

func withSecurity(p specParams, s security) specParams { p.Security = s; return p }

func TestPluginConfigSecurity(t *testing.T) {
	c := defaultConfig()
	c.AllowCaps = []string{"net_raw", "bogus"}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), `allow_caps: unknown capability "bogus"`) {
		t.Fatalf("err %v", err)
	}
	c = defaultConfig()
	c.Seccomp = "strict"
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "seccomp") {
		t.Fatalf("err %v", err)
	}
	prof := filepath.Join(t.TempDir(), "p.json")
	_ = os.WriteFile(prof, []byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}`), 0o600)
	c.Seccomp = prof
	if err := c.validate(); err != nil || c.seccompProfile == nil || c.seccompProfile.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Fatalf("profile file: %v %+v", err, c.seccompProfile)
	}
	_ = os.WriteFile(prof, []byte(`{"names":[]}`), 0o600)
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "not an OCI linux.seccomp profile") {
		t.Fatalf("err %v", err)
	}
	c = defaultConfig()
	c.MaskedPaths = []string{"etc/x"}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "masked_paths") {
		t.Fatalf("err %v", err)
	}
	if !slices.Equal(defaultConfig().allowCaps, crun.DefaultCapabilities) {
		t.Fatal("allow_caps default differs from the default set")
	}
}
