package lab.apps.fsprobe;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Reports what the process sees of its container, one "key: value" line each, so the e2e suite
 * can assert isolation: pid namespace, hostname, identity, writable and read-only paths, cgroup
 * and its memory limit, no_new_privs, capabilities, and the files named in args.
 */
public class FsProbe {
    private static final String[] WRITE_PROBES = {"/", "/usr", "/etc", "/tmp", "/local", "/alloc", "/alloc/data", "/secrets"};
    private static final String[] CAPS = {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
        "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"};

    public static void main(String[] args) {
        line("pid", Long.toString(ProcessHandle.current().pid()));
        line("hostname", read("/proc/sys/kernel/hostname").trim());
        line("cwd", Path.of("").toAbsolutePath().toString());
        line("user.name", System.getProperty("user.name"));
        String status = read("/proc/self/status");
        line("uid", field(status, "Uid"));
        line("gid", field(status, "Gid"));
        line("nonewprivs", field(status, "NoNewPrivs"));
        String capEff = field(status, "CapEff");
        line("capeff", capEff);
        line("capeff names", capNames(capEff));
        for (String dir : WRITE_PROBES) {
            line("write " + dir, tryWrite(Path.of(dir)));
        }
        // As a non-root user a write is denied by permissions anyway: the mount flags show
        // whether the path is really read-only.
        List<String[]> mounts = mounts();
        for (String dir : WRITE_PROBES) {
            line("mount " + dir, mountOf(mounts, dir));
        }
        for (String cgroupLine : read("/proc/self/cgroup").strip().split("\n")) {
            line("cgroup", cgroupLine);
        }
        // With a cgroup namespace the container's own cgroup is the root of /sys/fs/cgroup.
        line("memory.max", read("/sys/fs/cgroup/memory.max").trim());
        line("pids.max", read("/sys/fs/cgroup/pids.max").trim());
        List<String> pids = processes();
        line("procs", Integer.toString(pids.size()));
        line("proc pids", String.join(" ", pids));
        for (String arg : args) {
            line("file " + arg, describe(Path.of(arg)));
        }
        System.out.println("fsprobe done");
        System.out.flush();
    }

    private static void line(String key, String value) {
        System.out.println(key + ": " + value);
    }

    private static String read(String path) {
        try {
            return Files.readString(Path.of(path));
        } catch (IOException | RuntimeException e) {
            return "unreadable (" + e + ")";
        }
    }

    /** The first value of a "Key:\tv1\tv2" line of /proc/self/status. */
    private static String field(String status, String key) {
        for (String l : status.split("\n")) {
            if (l.startsWith(key + ":")) {
                return l.substring(key.length() + 1).trim().split("\\s+")[0];
            }
        }
        return "unknown";
    }

    private static String capNames(String hex) {
        long bits;
        try {
            bits = Long.parseUnsignedLong(hex, 16);
        } catch (NumberFormatException e) {
            return "unknown";
        }
        List<String> names = new ArrayList<>();
        for (int bit = 0; bit < 64; bit++) {
            if ((bits & (1L << bit)) != 0) {
                names.add(bit < CAPS.length ? CAPS[bit] : "CAP_" + bit);
            }
        }
        return names.isEmpty() ? "none" : String.join(",", names);
    }

    private static String tryWrite(Path dir) {
        Path probe = dir.resolve(".fsprobe-" + ProcessHandle.current().pid());
        try {
            Files.writeString(probe, "probe");
            Files.delete(probe);
            return "ok";
        } catch (Exception e) {
            return "denied (" + e + ")";
        }
    }

    /** [mount point, per-mount options, fs type] of each /proc/self/mountinfo line, in order. */
    private static List<String[]> mounts() {
        List<String[]> mounts = new ArrayList<>();
        for (String l : read("/proc/self/mountinfo").split("\n")) {
            String[] halves = l.split(" - ", 2);
            String[] fields = halves[0].split(" ");
            if (fields.length >= 6 && halves.length == 2) {
                mounts.add(new String[] {fields[4], fields[5], halves[1].split(" ")[0]});
            }
        }
        return mounts;
    }

    /** "ro (mountpoint=/usr fstype=ext4)" for the mount that holds path: the longest mount
     * point that contains it, the last one listed when mounts are stacked. */
    private static String mountOf(List<String[]> mounts, String path) {
        String[] best = null;
        for (String[] m : mounts) {
            String mp = m[0];
            boolean contains = mp.equals("/") || path.equals(mp) || path.startsWith(mp + "/");
            if (contains && (best == null || mp.length() >= best[0].length())) {
                best = m;
            }
        }
        if (best == null) {
            return "unknown";
        }
        String mode = ("," + best[1] + ",").contains(",ro,") ? "ro" : "rw";
        return mode + " (mountpoint=" + best[0] + " fstype=" + best[2] + ")";
    }

    private static List<String> processes() {
        List<String> pids = new ArrayList<>();
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(Path.of("/proc"))) {
            for (Path entry : entries) {
                String name = entry.getFileName().toString();
                if (name.chars().allMatch(Character::isDigit)) {
                    pids.add(name);
                }
            }
        } catch (IOException e) {
            pids.add("unreadable");
        }
        pids.sort((a, b) -> Long.compare(Long.parseLong(a), Long.parseLong(b)));
        return pids;
    }

    private static String describe(Path file) {
        if (!Files.exists(file)) {
            return "missing";
        }
        if (Files.isDirectory(file)) {
            return "directory";
        }
        try {
            byte[] content = Files.readAllBytes(file);
            return "readable size=" + content.length;
        } catch (Exception e) {
            return "unreadable (" + e + ")";
        }
    }
}
