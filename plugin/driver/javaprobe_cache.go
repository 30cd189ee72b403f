package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// javaProbeCacheDir holds the first line of `java -version` per java install,
// shared by every plugin process on the host. Each agent's driver starts with
// no memory of the last probe, and a JVM start costs a second of CPU under
// emulation, right when the new agent and the tests around it need it most.
const javaProbeCacheDir = "/run/java-crun-probes"

// javaProbeCacheTTL bounds how long a cached probe of an unchanged install is
// trusted; any change to the launcher, libjli, libjvm or the library
// directories changes the key (javaInstallKey) and so misses the cache.
const javaProbeCacheTTL = 10 * time.Minute

// cachedJavaVersion is javaVersion with a host-wide cache of successful
// probes, keyed by the java binary and the state of its install.
func cachedJavaVersion(dir string, probe func(context.Context, string) (string, error),
	installKey func(string) string, now func() time.Time) func(context.Context, string) (string, error) {
	return func(ctx context.Context, javaBin string) (string, error) {
		home := strings.TrimSuffix(javaBin, "/bin/java")
		sum := sha256.Sum256([]byte(javaBin + "\x00" + installKey(home)))
		path := filepath.Join(dir, hex.EncodeToString(sum[:16]))
		if st, err := os.Stat(path); err == nil && now().Sub(st.ModTime()) < javaProbeCacheTTL {
			if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
				return string(b), nil
			}
		}
		version, err := probe(ctx, javaBin)
		if err == nil && os.MkdirAll(dir, 0o700) == nil {
			tmp := path + ".tmp"
			if os.WriteFile(tmp, []byte(version), 0o600) == nil {
				_ = os.Rename(tmp, path)
			}
		}
		return version, err
	}
}
