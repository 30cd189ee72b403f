package driver

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/helper/pluginutils/hclspecutils"
	"github.com/hashicorp/nomad/helper/pluginutils/hclutils"
	"github.com/hashicorp/nomad/plugins/drivers"
)

func TestTaskConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		tc      TaskConfig
		wantErr string // substring; "" = valid
	}{
		{"jar", TaskConfig{JarPath: "local/app.jar"}, ""},
		{"jar with options and args", TaskConfig{JarPath: "local/app.jar", JVMOptions: []string{"-Xmx64m"}, Args: []string{"a", "-b"}}, ""},
		{"class", TaskConfig{Class: "com.example.Main", ClassPath: []string{"local/app.jar", "local/lib/*"}}, ""},
		{"neither", TaskConfig{}, "jar_path"},
		{"both", TaskConfig{JarPath: "local/app.jar", Class: "Main", ClassPath: []string{"x"}}, "both jar_path and class"},
		{"class without class_path", TaskConfig{Class: "Main"}, "class_path"},
		{"class_path with jar", TaskConfig{JarPath: "local/app.jar", ClassPath: []string{"x"}}, "class_path"},
		{"bad class name", TaskConfig{Class: "com/example/Main", ClassPath: []string{"x"}}, "not a Java class name"},
		{"jvm option without dash", TaskConfig{JarPath: "local/app.jar", JVMOptions: []string{"Xmx64m"}}, "jvm_options[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.tc.validate()
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, c.wantErr)
			}
		})
	}
}

func TestPluginConfigValidate(t *testing.T) {
	ok := defaultConfig()
	if err := ok.validate(); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	bad := map[string]func(*Config){
		"crun_path":           func(c *Config) { c.CrunPath = "" },
		"state_root":          func(c *Config) { c.StateRoot = "run/java-crun" },
		"java_home":           func(c *Config) { c.JavaHome = "jdk" },
		"fingerprint_period":  func(c *Config) { c.FingerprintPeriod = "soon" },
		"pids_limit":          func(c *Config) { c.PidsLimit = -1 },
		"default_user":        func(c *Config) { c.DefaultUser = "" },
		"crun_timeout":        func(c *Config) { c.CrunTimeout = "0s" },
		"orphan_grace_period": func(c *Config) { c.OrphanGracePeriod = "later" },
	}
	for field, mutate := range bad {
		c := defaultConfig()
		mutate(c)
		err := c.validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error = %v, want it to name the field", field, err)
		}
	}
	c := defaultConfig()
	c.FingerprintPeriod = "2s"
	if err := c.validate(); err != nil || c.fingerprintPeriod.Seconds() != 2 {
		t.Fatalf("fingerprint_period 2s: err=%v period=%v", err, c.fingerprintPeriod)
	}
}

func TestTaskConfigSpecDecodes(t *testing.T) {
	var tc TaskConfig
	hclutils.NewConfigParser(taskConfigSpec).ParseHCL(t, `
config {
  jar_path    = "local/app.jar"
  jvm_options = ["-Xmx64m"]
  args        = ["one", "two"]
}`, &tc)
	if tc.JarPath != "local/app.jar" || len(tc.JVMOptions) != 1 || len(tc.Args) != 2 {
		t.Fatalf("decoded %+v", tc)
	}
}

func TestTaskConfigSpecRejectsUnknownField(t *testing.T) {
	spec, diags := hclspecutils.Convert(taskConfigSpec)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	val := hclutils.HclConfigToInterface(t, `config { jar_path = "local/app.jar"  jar = "x" }`)
	_, diag, errs := hclutils.ParseHclInterface(val, spec, nil)
	if !diag.HasErrors() && len(errs) == 0 {
		t.Fatal("unknown field jar was accepted")
	}
	if msg := diag.Error(); !strings.Contains(msg, "jar") {
		t.Fatalf("error does not name the field: %s", msg)
	}
	_ = drivers.TaskConfig{}
}

func TestPluginConfigSpecDefaultsNewFields(t *testing.T) {
	// The lab's agent config sets only some fields: the new ones must default.
	var c Config
	hclutils.NewConfigParser(configSpec).ParseHCL(t, `
config {
  state_root         = "/run/java-crun-lab"
  fingerprint_period = "1s"
}`, &c)
	if c.CrunTimeout != "30s" || c.OrphanGracePeriod != "2m" {
		t.Fatalf("defaults: crun_timeout=%q orphan_grace_period=%q", c.CrunTimeout, c.OrphanGracePeriod)
	}
	if err := c.validate(); err != nil || c.crunTimeout.Seconds() != 30 || c.orphanGrace.Minutes() != 2 {
		t.Fatalf("validate: %v %+v", err, c)
	}
	if !slices.Equal(c.allowCaps, defaultConfig().allowCaps) || c.AllowRoot || c.Seccomp != "default" {
		t.Fatalf("security defaults from the schema: allow_caps=%v allow_root=%v seccomp=%q", c.AllowCaps, c.AllowRoot, c.Seccomp)
	}
}
