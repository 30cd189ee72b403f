package driver

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/nomad/plugins/drivers"
)

// validateTask decodes and checks everything a start depends on, so that
// bad input fails before any container exists.
func (d *Driver) validateTask(cfg *drivers.TaskConfig) (*TaskConfig, runtimeInfo, error) {
	var tc TaskConfig
	if err := cfg.DecodeDriverConfig(&tc); err != nil {
		return nil, runtimeInfo{}, unrecoverable(fmt.Errorf("task config: %w", err))
	}
	if err := tc.validate(); err != nil {
		return nil, runtimeInfo{}, unrecoverable(err)
	}
	// What the job asks and the driver cannot honour fails before the node
	// is even looked at: it is the job's fault whatever the node's state.
	if err := d.validateRequests(cfg, &tc); err != nil {
		return nil, runtimeInfo{}, unrecoverable(err)
	}
	rt, err := d.checkNode(d.ctx, d.runtime())
	if err != nil {
		return nil, rt, err
	}
	if tc.JarPath != "" {
		_, host, err := resolveTaskPath("jar_path", tc.JarPath, cfg.TaskDir())
		if err != nil {
			return nil, rt, unrecoverable(err)
		}
		if err := ValidateJar(host, tc.JarPath, true); err != nil {
			return nil, rt, unrecoverable(err)
		}
	}
	// The checks above run as root: the JVM runs as the task user.
	userName := d.taskUserName(cfg)
	u, err := hostUser(userName)
	if err != nil {
		return nil, rt, unrecoverable(err)
	}
	if err := checkRoot(d.config(), userName, u.UID); err != nil {
		return nil, rt, unrecoverable(err)
	}
	if err := checkTaskFiles(&tc, cfg.TaskDir(), hostAccess(u, userName)); err != nil {
		return nil, rt, unrecoverable(err)
	}
	return &tc, rt, nil
}

// validateRequests checks the task's volumes, devices, network, dns, cores
// and capabilities against what this driver and node can honour.
func (d *Driver) validateRequests(cfg *drivers.TaskConfig, tc *TaskConfig) error {
	if err := validateDNS(cfg.DNS); err != nil {
		return err
	}
	if _, err := networkNamespace(cfg.NetworkIsolation); err != nil {
		return err
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if _, err := volumeBinds(cfg.Mounts, exists); err != nil {
		return err
	}
	if _, err := taskDevices(cfg.Devices, hostDevice); err != nil {
		return err
	}
	if cores := reservedCores(cfg); cores != "" {
		if err := validCpuset(cores); err != nil {
			return err
		}
	}
	_, err := taskSecurity(d.config(), tc, filepath.Glob)
	return err
}

// taskUserName is the task's user, else the plugin's default_user.
func (d *Driver) taskUserName(cfg *drivers.TaskConfig) string {
	if cfg.User != "" {
		return cfg.User
	}
	return d.config().DefaultUser
}
