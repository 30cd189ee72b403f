package driver

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// containerUser is the uid/gid the JVM runs as.
type containerUser struct {
	UID, GID uint32
	Groups   []uint32
}

// resolveUser turns the task's `user` ("name", "uid" or "uid:gid") into ids
// using the host's user database (the container sees the host's /etc).
func resolveUser(name string, lookup func(string) (*user.User, error), groupIDs func(*user.User) ([]string, error)) (containerUser, error) {
	if uidStr, gidStr, ok := strings.Cut(name, ":"); ok {
		uid, err1 := strconv.ParseUint(uidStr, 10, 32)
		gid, err2 := strconv.ParseUint(gidStr, 10, 32)
		if err1 != nil || err2 != nil {
			return containerUser{}, fmt.Errorf("task user %q: expected a user name, a uid or uid:gid", name)
		}
		return containerUser{UID: uint32(uid), GID: uint32(gid)}, nil
	}
	if uid, err := strconv.ParseUint(name, 10, 32); err == nil {
		return containerUser{UID: uint32(uid), GID: uint32(uid)}, nil
	}
	u, err := lookup(name)
	if err != nil {
		return containerUser{}, fmt.Errorf("task user %q does not exist on this node: create it or set user in the task (%v)", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cu := containerUser{UID: uint32(uid), GID: uint32(gid)}
	if ids, err := groupIDs(u); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != cu.GID {
				cu.Groups = append(cu.Groups, uint32(n))
			}
		}
	}
	return cu, nil
}

func hostUser(name string) (containerUser, error) {
	return resolveUser(name, user.Lookup, (*user.User).GroupIds)
}
