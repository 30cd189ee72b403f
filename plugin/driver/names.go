package driver

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// The container sees the host's /etc, but two files there must differ:
//   - /etc/hosts must name the container's own hostname, or Java's
//     InetAddress.getLocalHost() fails ("Name or service not known");
//   - /etc/resolv.conf must work from the container's network namespace
//     and honour the task's `dns` block.
// The driver writes both into the bundle and binds them read-only over the
// host's. A host /etc/resolv.conf that is a symlink (systemd-resolved:
// -> /run/systemd/resolve/stub-resolv.conf) is covered at its target, under
// the container's own /run tmpfs, since a mount on a dangling symlink in
// the read-only root would fail.

const (
	systemdStubResolver = "127.0.0.53"
	// systemdUpstreamResolv lists the upstream servers systemd-resolved
	// uses itself, without the stub.
	systemdUpstreamResolv = "/run/systemd/resolve/resolv.conf"
)

// nameHost is how the driver reads the host's files (injected for tests).
type nameHost struct {
	ReadFile     func(string) ([]byte, error)
	EvalSymlinks func(string) (string, error)
}

var realNameHost = nameHost{ReadFile: os.ReadFile, EvalSymlinks: filepath.EvalSymlinks}

// nameResolution writes dir/hosts and dir/resolv.conf and returns their
// binds, plus notes for the task's events (e.g. the stub was replaced).
func nameResolution(dir string, cfg *drivers.TaskConfig, hostname string, host nameHost) ([]crun.Bind, []string, error) {
	ownNet := cfg.NetworkIsolation != nil && cfg.NetworkIsolation.Mode == drivers.NetIsolationModeGroup
	addr := ""
	if ownNet && cfg.NetworkIsolation.HostsConfig != nil {
		addr = cfg.NetworkIsolation.HostsConfig.Address
	}
	hostHosts, _ := host.ReadFile("/etc/hosts")
	hostResolv, err := host.ReadFile("/etc/resolv.conf")
	if err != nil && cfg.DNS == nil {
		hostResolv = nil // no resolver on the host either: an empty file says so
	}
	upstream, _ := host.ReadFile(systemdUpstreamResolv)
	resolv, notes := buildResolvConf(hostResolv, upstream, ownNet, cfg.DNS)

	var binds []crun.Bind
	for _, f := range []struct{ name, content string }{
		{"hosts", buildHosts(hostname, addr, hostHosts)},
		{"resolv.conf", resolv},
	} {
		src := filepath.Join(dir, f.name)
		if err := os.WriteFile(src, []byte(f.content), 0o644); err != nil {
			return nil, nil, fmt.Errorf("write the container's /etc/%s: %w", f.name, err)
		}
		binds = append(binds, crun.Bind{Source: src, Destination: etcDestination("/etc/"+f.name, host), ReadOnly: true})
	}
	return binds, notes, nil
}

// etcDestination is where to mount over path: its symlink target when that
// is under /run (the container's tmpfs) or a bound system dir, else path.
func etcDestination(path string, host nameHost) string {
	target, err := host.EvalSymlinks(path)
	if err != nil || target == path || !filepath.IsAbs(target) {
		return path
	}
	if under(target, "/run") || coveredBySystemDirs(target) {
		return target
	}
	return path
}

// buildHosts: localhost, the container's own name (on the group network's
// address, else 127.0.1.1 as Debian does for a host's own name, reachable
// in any network mode), then the host's entries.
func buildHosts(hostname, addr string, hostHosts []byte) string {
	if addr == "" {
		addr = "127.0.1.1"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# written by the java-crun driver\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, hostname)
	if len(hostHosts) > 0 {
		b.WriteString("\n# the host's /etc/hosts\n")
		b.Write(hostHosts)
		if !bytes.HasSuffix(hostHosts, []byte("\n")) {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// buildResolvConf resolves names the way the host does: the host's
// resolv.conf, except that a loopback nameserver (systemd-resolved's stub
// 127.0.0.53, a local dnsmasq) is unreachable from a network namespace of
// its own, so there systemd-resolved's upstream list replaces it. The task's
// dns servers, searches and options replace the host's, each on its own.
func buildResolvConf(hostResolv, upstream []byte, ownNet bool, dns *drivers.DNSConfig) (string, []string) {
	servers, search, options := parseResolvConf(hostResolv)
	var notes []string
	if ownNet && len(servers) > 0 && allLoopback(servers) {
		if up, _, _ := parseResolvConf(upstream); len(up) > 0 && !allLoopback(up) {
			notes = append(notes, fmt.Sprintf("the host's nameserver %s is not reachable from the task's network namespace: using systemd-resolved's upstream servers %s from %s",
				strings.Join(servers, ","), strings.Join(up, ","), systemdUpstreamResolv))
			servers = up
		} else {
			notes = append(notes, fmt.Sprintf("the host's nameserver %s is not reachable from the task's network namespace and no upstream list was found in %s: set the task's dns servers",
				strings.Join(servers, ","), systemdUpstreamResolv))
		}
	}
	if dns != nil {
		if len(dns.Servers) > 0 {
			servers = dns.Servers
		}
		if len(dns.Searches) > 0 {
			search = dns.Searches
		}
		if len(dns.Options) > 0 {
			options = dns.Options
		}
	}
	var b strings.Builder
	b.WriteString("# written by the java-crun driver from the host's resolv.conf and the task's dns block\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String(), notes
}

func parseResolvConf(data []byte) (servers, search, options []string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			servers = append(servers, f[1])
		case "search", "domain": // the last one wins, as in the resolver
			search = f[1:]
		case "options":
			options = append(options, f[1:]...)
		}
	}
	return servers, search, options
}

func allLoopback(servers []string) bool {
	for _, s := range servers {
		if ip := net.ParseIP(s); ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// validateDNS refuses a dns block the resolver would ignore in silence.
func validateDNS(dns *drivers.DNSConfig) error {
	if dns == nil {
		return nil
	}
	for _, s := range dns.Servers {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("task dns servers: %q is not an IP address (the resolver takes addresses, not names)", s)
		}
	}
	return nil
}
