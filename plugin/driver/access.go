package driver

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/nomad/client/allocdir"
)

// fileStat is the part of a host stat the task user's access check needs.
type fileStat struct {
	Mode     fs.FileMode // permission bits, plus fs.ModeDir for a directory
	UID, GID uint32
	ACL      bool // has a POSIX access ACL: the mode bits do not tell the whole story
}

// accessCheck decides, as the kernel would for the task user, whether the
// files a task reads are reachable and readable. The driver validates as
// root, so without it an unreadable JAR only shows up as the JVM's exit 1.
// Stat and the name look-ups are injected so the check is pure.
type accessCheck struct {
	User      containerUser
	UserName  string // as configured: "nobody", "1000" or "1000:1000"
	Stat      func(hostPath string) (fileStat, error)
	OwnerName func(uid uint32) string // "" when unknown
	GroupName func(gid uint32) string // "" when unknown
}

const (
	permRead   fs.FileMode = 4
	permSearch fs.FileMode = 1
)

// allowed reports whether the user holds every bit of want on st: the
// owner's bits if it owns the file, else the group's if it is in the file's
// group (primary or supplementary), else the others'. uid 0 has
// CAP_DAC_OVERRIDE, so it can always read and search.
func (a accessCheck) allowed(st fileStat, want fs.FileMode) bool {
	if a.User.UID == 0 || st.ACL {
		return true // an ACL may grant what the mode bits do not: let the JVM decide
	}
	perm := st.Mode.Perm()
	switch {
	case a.User.UID == st.UID:
		return perm&(want<<6) == want<<6
	case a.inGroup(st.GID):
		return perm&(want<<3) == want<<3
	default:
		return perm&want == want
	}
}

func (a accessCheck) inGroup(gid uint32) bool {
	if a.User.GID == gid {
		return true
	}
	for _, g := range a.User.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// check returns an error naming shown when the task user cannot search every
// directory from root (the mount's source, which the container sees as its
// top) down to host, or cannot read host (search it too when it is a
// directory; list it as well when list is set). A path that does not exist
// is left to the other checks.
func (a accessCheck) check(shown, root, host string, list bool) error {
	st, err := a.Stat(host)
	if err != nil {
		return nil
	}
	var dirs []string
	for d := filepath.Dir(host); under(d, root) && d != host; d = filepath.Dir(d) {
		dirs = append([]string{d}, dirs...)
		if d == root || d == "/" {
			break
		}
	}
	for _, d := range dirs {
		ds, err := a.Stat(d)
		if err != nil || a.allowed(ds, permSearch) {
			continue
		}
		return fmt.Errorf("%s is not readable by task user %s: its directory %s has mode %04o, owner %s, and the user cannot enter it: %s",
			shown, a.userLabel(), shownDir(shown, host, d), ds.Mode.Perm(), a.owner(ds, permSearch), accessFix)
	}
	want := permRead
	if st.Mode.IsDir() {
		want = permSearch
		if list {
			want |= permRead
		}
	}
	if a.allowed(st, want) {
		return nil
	}
	return fmt.Errorf("%s is not readable by task user %s: mode %04o, owner %s: %s",
		shown, a.userLabel(), st.Mode.Perm(), a.owner(st, want), accessFix)
}

const accessFix = "set the artifact's chown = true or fix its mode"

// userLabel is "nobody (uid 65534)", or "uid 1000, gid 1000" for ids.
func (a accessCheck) userLabel() string {
	if _, err := strconv.ParseUint(strings.ReplaceAll(a.UserName, ":", ""), 10, 32); err == nil || a.UserName == "" {
		return fmt.Sprintf("uid %d, gid %d", a.User.UID, a.User.GID)
	}
	return fmt.Sprintf("%s (uid %d)", a.UserName, a.User.UID)
}

// owner names the file's owner, and its group too when the group's bits
// would grant the access (so membership is what is missing).
func (a accessCheck) owner(st fileStat, want fs.FileMode) string {
	s := nameOr(a.OwnerName, st.UID)
	if st.Mode.Perm()&(want<<3) == want<<3 {
		s += ", group " + nameOr(a.GroupName, st.GID)
	}
	return s
}

func nameOr(lookup func(uint32) string, id uint32) string {
	if lookup != nil {
		if n := lookup(id); n != "" {
			return n
		}
	}
	return strconv.FormatUint(uint64(id), 10)
}

// shownDir writes the host directory dir (a parent of host) the way the job
// wrote host's path, e.g. "local" for "local/hello.jar".
func shownDir(shown, host, dir string) string {
	rel, err := filepath.Rel(dir, host)
	if err == nil {
		if s := filepath.Clean(shown); strings.HasSuffix(s, "/"+rel) {
			return strings.TrimSuffix(s, "/"+rel)
		}
	}
	return dir
}

// mountRoot is the host directory the container sees at the top of the
// mount that holds container path c.
func mountRoot(c string, td *allocdir.TaskDir) string {
	for dst, src := range taskDirMounts(td) {
		if under(c, dst) {
			return src
		}
	}
	for _, dir := range systemDirs {
		if under(c, dir) {
			return dir
		}
	}
	return "/"
}

// checkTaskFiles checks jar_path and every class_path entry (a trailing "*"
// wildcard needs its directory listable) against the task user.
func checkTaskFiles(tc *TaskConfig, td *allocdir.TaskDir, a accessCheck) error {
	type entry struct{ field, path string }
	var entries []entry
	if tc.JarPath != "" {
		entries = append(entries, entry{"jar_path", tc.JarPath})
	}
	for i, p := range tc.ClassPath {
		entries = append(entries, entry{fmt.Sprintf("class_path[%d]", i), p})
	}
	for _, e := range entries {
		c, host, err := resolveTaskPath(e.field, e.path, td)
		if err != nil {
			return err
		}
		shown, list := e.path, false
		if filepath.Base(c) == "*" {
			c, host, shown, list = filepath.Dir(c), filepath.Dir(host), filepath.Dir(shown), true
		}
		if err := a.check(shown, mountRoot(c, td), host, list); err != nil {
			return err
		}
	}
	return nil
}

// hostAccess is the accessCheck for user u on this host.
func hostAccess(u containerUser, name string) accessCheck {
	return accessCheck{
		User:     u,
		UserName: name,
		Stat:     hostStat,
		OwnerName: func(uid uint32) string {
			if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
				return u.Username
			}
			return ""
		},
		GroupName: func(gid uint32) string {
			if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
				return g.Name
			}
			return ""
		},
	}
}

func hostStat(p string) (fileStat, error) {
	info, err := os.Stat(p)
	if err != nil {
		return fileStat{}, err
	}
	st := fileStat{Mode: info.Mode() & (fs.ModePerm | fs.ModeDir)}
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		st.UID, st.GID = sys.Uid, sys.Gid
	}
	if n, err := unix.Getxattr(p, "system.posix_acl_access", nil); err == nil && n > 0 {
		st.ACL = true
	}
	return st, nil
}
