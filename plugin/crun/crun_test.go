package crun

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestErrorMessages(t *testing.T) {
	log := `{"msg": "cannot set memory limit", "level": "warning", "time": "x"}
{"msg": "executable file ` + "`java`" + ` not found in $PATH: No such file or directory", "level": "error", "time": "x"}
plain text before json parsing
`
	got := ErrorMessages([]byte(log))
	want := []string{"executable file `java` not found in $PATH: No such file or directory", "plain text before json parsing"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if ReadErrorMessages("/nonexistent/log") != nil {
		t.Fatal("missing log must have no messages")
	}
	e := &Error{Msg: got[0]}
	if e.Error() != "crun: "+got[0] {
		t.Fatal(e.Error())
	}
}

func TestWriteBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	spec := BuildSpec(SpecInput{Args: []string{"/bin/true"}, Cwd: "/", NoFile: 1024, PidsLimit: 10, MemoryLimit: 1 << 20})
	if err := WriteBundle(dir, spec); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "rootfs")); err != nil || !fi.IsDir() {
		t.Fatal("rootfs missing")
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back specs.Spec
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Version != OCIVersion || back.Process.Args[0] != "/bin/true" || *back.Linux.Resources.Pids.Limit != 10 {
		t.Fatalf("round trip lost data: %+v", back.Process)
	}
}

func TestBuildSpecRootGetsCapabilities(t *testing.T) {
	s := BuildSpec(SpecInput{UID: 0})
	if !slices.Equal(s.Process.Capabilities.Effective, DefaultCapabilities) {
		t.Fatal("root task should have the default capabilities effective")
	}
	if s.Linux.Resources.Devices[0].Allow {
		t.Fatal("device cgroup must deny by default")
	}
}

// fakeCrun writes a shell script standing in for crun.
func fakeCrun(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "crun")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCallHasDeadlineNamingTheCommand(t *testing.T) {
	cli := &CLI{Path: fakeCrun(t, "exec sleep 60"), Root: "/run/x/crun", Timeout: 300 * time.Millisecond}
	start := time.Now()
	err := cli.Kill(context.Background(), "c1", "SIGTERM")
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a hung crun held the caller for %s", took)
	}
	var ce *Error
	if !errors.As(err, &ce) || !ce.TimedOut {
		t.Fatalf("want a timeout error, got %v", err)
	}
	for _, want := range []string{"--root /run/x/crun kill c1 SIGTERM", "did not return within 300ms", "crun_timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestCallReportsCrunMessage(t *testing.T) {
	// crun writes its JSON log to the file after --log.
	cli := &CLI{Path: fakeCrun(t, `echo '{"level":"error","msg":"container c1 is not running"}' > "$4"; exit 1`), Root: t.TempDir()}
	err := cli.Kill(context.Background(), "c1", "SIGTERM")
	var ce *Error
	if !errors.As(err, &ce) || ce.TimedOut || err.Error() != "crun: container c1 is not running" {
		t.Fatalf("got %v", err)
	}
}
