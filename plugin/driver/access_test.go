package driver

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/client/allocdir"
)

func TestAccessCheck(t *testing.T) {
	const root = "/data/alloc/a1/main/local"
	jar := root + "/hello.jar"
	dir := func(perm fs.FileMode, uid, gid uint32) fileStat {
		return fileStat{Mode: fs.ModeDir | perm, UID: uid, GID: gid}
	}
	file := func(perm fs.FileMode, uid, gid uint32) fileStat {
		return fileStat{Mode: perm, UID: uid, GID: gid}
	}
	nobody := containerUser{UID: 65534, GID: 65534}
	app := containerUser{UID: 1000, GID: 1000, Groups: []uint32{50, 60}}
	cases := []struct {
		name    string
		user    containerUser
		uname   string
		files   map[string]fileStat
		shown   string
		host    string
		list    bool
		wantErr string // "" = readable
	}{
		{name: "root-owned 0600, nobody", user: nobody, uname: "nobody",
			files:   map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o600, 0, 0)},
			wantErr: "local/hello.jar is not readable by task user nobody (uid 65534): mode 0600, owner root: set the artifact's chown = true or fix its mode"},
		{name: "other read bit", user: nobody, uname: "nobody",
			files: map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o604, 0, 0)}},
		{name: "owner read bit", user: app, uname: "app",
			files: map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o400, 1000, 0)}},
		{name: "owner without read bit, others with it", user: app, uname: "app",
			files:   map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o044, 1000, 0)},
			wantErr: "mode 0044, owner app"},
		{name: "group read bit via primary gid", user: app, uname: "app",
			files: map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o640, 0, 1000)}},
		{name: "group read bit via supplementary gid", user: app, uname: "app",
			files: map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o640, 0, 60)}},
		{name: "group read bit, not a member", user: app, uname: "app",
			files:   map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o640, 0, 70)},
			wantErr: "mode 0640, owner root, group 70"},
		{name: "root reads anything", user: containerUser{}, uname: "root",
			files: map[string]fileStat{root: dir(0o700, 5, 5), jar: file(0o000, 5, 5)}},
		{name: "ACL: left to the kernel", user: nobody, uname: "nobody",
			files: map[string]fileStat{root: dir(0o777, 0, 0), jar: {Mode: 0o600, ACL: true}}},
		{name: "task dir without x bit", user: nobody, uname: "nobody",
			files:   map[string]fileStat{root: dir(0o770, 0, 0), jar: file(0o644, 0, 0)},
			wantErr: "local/hello.jar is not readable by task user nobody (uid 65534): its directory local has mode 0770, owner root, group root, and the user cannot enter it"},
		{name: "sub dir without x bit", user: nobody, uname: "nobody",
			files: map[string]fileStat{root: dir(0o777, 0, 0), root + "/lib": dir(0o600, 0, 0),
				root + "/lib/dep.jar": file(0o644, 0, 0)},
			shown: "local/lib/dep.jar", host: root + "/lib/dep.jar",
			wantErr: "its directory local/lib has mode 0600"},
		{name: "parents above the mount are not checked", user: nobody, uname: "nobody",
			files: map[string]fileStat{"/data/alloc/a1/main": dir(0o700, 0, 0), root: dir(0o777, 0, 0), jar: file(0o644, 0, 0)}},
		{name: "numeric user", user: containerUser{UID: 1234, GID: 1234}, uname: "1234:1234",
			files:   map[string]fileStat{root: dir(0o777, 0, 0), jar: file(0o600, 0, 0)},
			wantErr: "task user uid 1234, gid 1234: mode 0600"},
		{name: "class_path directory needs search", user: nobody, uname: "nobody",
			files: map[string]fileStat{root: dir(0o777, 0, 0), root + "/classes": dir(0o744, 0, 0)},
			shown: "local/classes", host: root + "/classes",
			wantErr: "local/classes is not readable by task user nobody (uid 65534): mode 0744"},
		{name: "class_path wildcard directory needs read", user: nobody, uname: "nobody",
			files: map[string]fileStat{root: dir(0o777, 0, 0), root + "/lib": dir(0o711, 0, 0)},
			shown: "local/lib", host: root + "/lib", list: true,
			wantErr: "local/lib is not readable"},
		{name: "missing file is left to the other checks", user: nobody, uname: "nobody",
			files: map[string]fileStat{root: dir(0o777, 0, 0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := accessCheck{
				User: tc.user, UserName: tc.uname,
				Stat: func(p string) (fileStat, error) {
					if st, ok := tc.files[p]; ok {
						return st, nil
					}
					return fileStat{}, fs.ErrNotExist
				},
				OwnerName: func(uid uint32) string {
					return map[uint32]string{0: "root", 1000: "app", 65534: "nobody"}[uid]
				},
				GroupName: func(gid uint32) string { return map[uint32]string{0: "root"}[gid] },
			}
			shown, host := "local/hello.jar", jar
			if tc.host != "" {
				shown, host = tc.shown, tc.host
			}
			err := a.check(shown, root, host, tc.list)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("no error, want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q\nwant it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestCheckTaskFiles runs the real stat on a task dir: jar_path and
// class_path entries (including a "*" wildcard) map to the right files.
func TestCheckTaskFiles(t *testing.T) {
	base := t.TempDir()
	td := &allocdir.TaskDir{LocalDir: filepath.Join(base, "local"), SharedAllocDir: filepath.Join(base, "alloc"),
		SecretsDir: filepath.Join(base, "secrets")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(td.LocalDir, "lib"), 0o755))
	must(os.Chmod(td.LocalDir, 0o777))
	must(os.WriteFile(filepath.Join(td.LocalDir, "ok.jar"), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(td.LocalDir, "private.jar"), []byte("x"), 0o600))
	uid := uint32(os.Getuid())
	stranger := hostAccess(containerUser{UID: uid + 4242, GID: uid + 4242}, "")
	self := hostAccess(containerUser{UID: uid, GID: uint32(os.Getgid())}, "")

	for _, c := range []struct {
		tc      TaskConfig
		a       accessCheck
		wantErr string
	}{
		{TaskConfig{JarPath: "local/ok.jar"}, stranger, ""},
		{TaskConfig{JarPath: "/local/private.jar"}, stranger, "/local/private.jar is not readable"},
		{TaskConfig{JarPath: "local/private.jar"}, self, ""},
		{TaskConfig{Class: "A", ClassPath: []string{"local/ok.jar", "local/lib/*", "local/private.jar"}}, stranger, "local/private.jar is not readable"},
		{TaskConfig{Class: "A", ClassPath: []string{"local/lib/*", "local/missing.jar"}}, stranger, ""},
	} {
		err := checkTaskFiles(&c.tc, td, c.a)
		if (err == nil) != (c.wantErr == "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%+v: error %v, want %q", c.tc, err, c.wantErr)
		}
	}
}
