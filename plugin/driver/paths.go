package driver

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/nomad/client/allocdir"
)

// systemDirs are bound read-only from the host to make the container's root.
var systemDirs = []string{"/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"}

// taskDirMounts maps container paths to the task's host directories.
func taskDirMounts(td *allocdir.TaskDir) map[string]string {
	return map[string]string{
		"/local":   td.LocalDir,
		"/alloc":   td.SharedAllocDir,
		"/secrets": td.SecretsDir,
	}
}

// resolveTaskPath maps a path from the job ("local/app.jar", relative to the
// task directory, or absolute inside the container) to its container path and
// its host path, refusing anything the container cannot see.
func resolveTaskPath(field, p string, td *allocdir.TaskDir) (container, host string, err error) {
	if p == "" {
		return "", "", fmt.Errorf("task config %s is empty", field)
	}
	c := filepath.Clean("/" + p)
	if filepath.IsAbs(p) {
		c = filepath.Clean(p)
	}
	for dst, src := range taskDirMounts(td) {
		if c == dst || strings.HasPrefix(c, dst+"/") {
			return c, filepath.Join(src, strings.TrimPrefix(c, dst)), nil
		}
	}
	if filepath.IsAbs(p) {
		for _, dir := range systemDirs {
			if strings.HasPrefix(c, dir+"/") {
				return c, c, nil // visible read-only at the same path
			}
		}
	}
	return "", "", fmt.Errorf("task config %s %q is outside the container: use a path under local/, alloc/ or secrets/ (relative to the task directory)", field, p)
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
