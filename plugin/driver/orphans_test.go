package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// fakeCrunState is a shell crun that keeps containers as directories in its
// --root (as crun does) and logs every call to <dir>/calls. With
// stuck=true, `delete` leaves the container in place.
func fakeCrunState(t *testing.T, dir string, stuck bool) string {
	t.Helper()
	del := `rm -rf "$root/$1"`
	if stuck {
		del = `:`
	}
	script := `#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in --root) root=$2; shift 2;; --log) log=$2; shift 2;; --log-format=*) shift;; *) break;; esac; done
cmd=$1; shift
echo "$root $cmd $*" >> ` + filepath.Join(dir, "calls") + `
case "$cmd" in
state) [ -d "$root/$1" ] || { echo "{\"level\":\"error\",\"msg\":\"container $1 does not exist\"}" > "$log"; exit 1; }
       echo "{\"id\":\"$1\",\"pid\":0,\"status\":\"running\"}";;
delete) [ "$1" = --force ] && shift; ` + del + `;;
list) ls "$root";;
esac
`
	p := filepath.Join(dir, "crun")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type stateRootFixture struct {
	dir, root, crun string
	d               *Driver
	log             *lockedBuffer
}

// newStateRootFixture is a driver over a temp state root with a fake crun;
// containers are added before setConfig, as if left by an earlier plugin.
func newStateRootFixture(t *testing.T, stuck bool) *stateRootFixture {
	t.Helper()
	dir := t.TempDir()
	f := &stateRootFixture{dir: dir, root: filepath.Join(dir, "state"), log: &lockedBuffer{}}
	f.crun = fakeCrunState(t, dir, stuck)
	f.d = New(hclog.New(&hclog.LoggerOptions{Output: f.log, Level: hclog.Info})).(*Driver)
	t.Cleanup(f.d.Shutdown)
	return f
}

func (f *stateRootFixture) setConfig(t *testing.T, grace string) {
	t.Helper()
	var data []byte
	cfg := map[string]any{"state_root": f.root, "crun_path": f.crun, "orphan_grace_period": grace}
	if err := base.MsgPackEncode(&data, cfg); err != nil {
		t.Fatal(err)
	}
	if err := f.d.SetConfig(&base.Config{PluginConfig: data}); err != nil {
		t.Fatal(err)
	}
}

// addContainer leaves a container: crun state, bundle with shim.json, or both.
func (f *stateRootFixture) addContainer(t *testing.T, id string, inCrun, withBundle bool) {
	t.Helper()
	crunRoot, bundles := stateRootPaths(f.root)
	if inCrun {
		if err := os.MkdirAll(filepath.Join(crunRoot, id), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if withBundle {
		b := filepath.Join(bundles, id)
		if err := os.MkdirAll(b, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := shim.WriteConfig(&shim.Config{CrunPath: f.crun, CrunRoot: crunRoot, ContainerID: id, Bundle: b}); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *stateRootFixture) exists(id string) (inCrun, bundle bool) {
	crunRoot, bundles := stateRootPaths(f.root)
	_, e1 := os.Stat(filepath.Join(crunRoot, id))
	_, e2 := os.Stat(filepath.Join(bundles, id))
	return e1 == nil, e2 == nil
}

func (f *stateRootFixture) calls() string {
	data, _ := os.ReadFile(filepath.Join(f.dir, "calls"))
	return string(data)
}

const lostTaskID = "4f2b8a8e-1111-2222-3333-444455556666/main/0a1b2c3d"

func TestDestroyUnknownTaskRemovesItsContainer(t *testing.T) {
	f := newStateRootFixture(t, false)
	id := containerIDFor(lostTaskID)
	f.addContainer(t, id, true, true)
	f.setConfig(t, "1h")
	if err := f.d.DestroyTask(lostTaskID, true); err != nil {
		t.Fatalf("DestroyTask of a task without handle: %v", err)
	}
	if inCrun, bundle := f.exists(id); inCrun || bundle {
		t.Fatalf("left behind: crun state %v, bundle %v", inCrun, bundle)
	}
	if !strings.Contains(f.calls(), "delete --force "+id) {
		t.Fatalf("no force delete by ID; crun calls:\n%s", f.calls())
	}
}

func TestDestroyUnknownTaskFailsUntilGone(t *testing.T) {
	f := newStateRootFixture(t, true) // crun delete "succeeds" but the container stays
	id := containerIDFor(lostTaskID)
	f.addContainer(t, id, true, true)
	f.setConfig(t, "1h")
	err := f.d.DestroyTask(lostTaskID, true)
	if err == nil || !strings.Contains(err.Error(), "still exists after crun delete --force") {
		t.Fatalf("DestroyTask must not report success while the container exists: %v", err)
	}
}

func TestDestroyUnknownTaskWithNothingLeft(t *testing.T) {
	f := newStateRootFixture(t, false)
	f.setConfig(t, "1h")
	if err := f.d.DestroyTask(lostTaskID, false); err != nil {
		t.Fatal(err)
	}
	if c := f.calls(); c != "" {
		t.Fatalf("crun called for nothing:\n%s", c)
	}
}

func TestOrphanSweepRemovesUnclaimedContainersOnly(t *testing.T) {
	f := newStateRootFixture(t, false)
	// A container Nomad recovers, one nobody claims, a bundle whose crun
	// state is gone, and a container under another state root.
	claimedCfg := &drivers.TaskConfig{ID: "aaaaaaaa-0000-0000-0000-000000000001/web/11111111", Name: "web"}
	claimed := containerID(claimedCfg)
	f.addContainer(t, claimed, true, true)
	f.addContainer(t, "bbbbbbbb-0000-0000-0000-000000000002.api.22222222", true, true)
	f.addContainer(t, "cccccccc-0000-0000-0000-000000000003.db.33333333", false, true)
	foreign := filepath.Join(f.dir, "other-root", "crun", "dddd.x.44444444")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	f.setConfig(t, "300ms")

	// Nomad recovers the first one within the grace period (its shim is
	// this test process, alive).
	ticks, _ := shim.StartTicks(os.Getpid())
	th := drivers.NewTaskHandle(handleVersion)
	th.Config = claimedCfg
	crunRoot, bundles := stateRootPaths(f.root)
	if err := th.SetDriverState(&task.State{ContainerID: claimed, BundleDir: filepath.Join(bundles, claimed),
		CrunPath: f.crun, CrunRoot: crunRoot, ShimPID: os.Getpid(), ShimStartTicks: ticks}); err != nil {
		t.Fatal(err)
	}
	if err := f.d.RecoverTask(th); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	if inCrun, _ := f.exists("bbbbbbbb-0000-0000-0000-000000000002.api.22222222"); !inCrun {
		t.Fatal("swept before the grace period ended")
	}

	waitFor(t, 10*time.Second, "the sweep", func() bool {
		a, b := f.exists("bbbbbbbb-0000-0000-0000-000000000002.api.22222222")
		_, c := f.exists("cccccccc-0000-0000-0000-000000000003.db.33333333")
		return !a && !b && !c
	})
	if inCrun, bundle := f.exists(claimed); !inCrun || !bundle {
		t.Fatalf("the recovered container was removed: crun %v bundle %v", inCrun, bundle)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a container outside the state root was touched: %v", err)
	}
	for _, c := range strings.Split(strings.TrimSpace(f.calls()), "\n") {
		if !strings.HasPrefix(c, crunRoot+" ") {
			t.Errorf("crun called on another root: %q", c)
		}
	}
	logs := f.log.String()
	for _, id := range []string{"bbbbbbbb-0000-0000-0000-000000000002.api.22222222", "cccccccc-0000-0000-0000-000000000003.db.33333333"} {
		want := "container_id=" + id + " bundle=" + filepath.Join(bundles, id)
		if !strings.Contains(logs, "[WARN]") || !strings.Contains(logs, want) {
			t.Errorf("no WARN naming %s and its bundle in:\n%s", id, logs)
		}
	}
	if strings.Contains(logs, "container_id="+claimed+" bundle") {
		t.Errorf("the claimed container was logged as an orphan:\n%s", logs)
	}
}
