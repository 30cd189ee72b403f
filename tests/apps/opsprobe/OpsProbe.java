package lab.apps.opsprobe;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * What an operator's job sees of its node, one probe per argument, in order; each prints one
 * line. "cpus": "cpus: N" (Runtime.availableProcessors). "localhost": "localhost: <name>/<addr>"
 * (InetAddress.getLocalHost) or "localhost: failed (<exception>)". "resolve:NAME": "resolve
 * NAME: <addr>,<addr>" or "resolve NAME: failed (<exception>)". "write:DIR": writes
 * DIR/opsprobe-<NOMAD_TASK_NAME> ("written by <task>"): "write DIR: ok" or "write DIR: denied
 * (<exception>)". "read:FILE": "read FILE: <content>" or "read FILE: failed (<exception>)".
 * "mount:DIR": "mount DIR: ro" or "rw" (the mount at exactly DIR, from /proc/self/mountinfo),
 * or "mount DIR: none". "orphan": starts /bin/sh, which starts `sleep 2` in the background and
 * exits: the sleep is orphaned inside the container; prints "orphan pid=<pid of the sleep>".
 * "hold": prints "opsprobe holding" and waits to be stopped. Without "hold", it prints
 * "opsprobe done" and exits 0.
 */
public class OpsProbe {
    public static void main(String[] args) throws Exception {
        String task = System.getenv().getOrDefault("NOMAD_TASK_NAME", "task");
        for (String arg : args) {
            String op = arg;
            String value = "";
            int colon = arg.indexOf(':');
            if (colon >= 0) {
                op = arg.substring(0, colon);
                value = arg.substring(colon + 1);
            }
            switch (op) {
                case "cpus":
                    say("cpus: " + Runtime.getRuntime().availableProcessors());
                    break;
                case "localhost":
                    try {
                        InetAddress local = InetAddress.getLocalHost();
                        say("localhost: " + local.getHostName() + "/" + local.getHostAddress());
                    } catch (IOException e) {
                        say("localhost: failed (" + e + ")");
                    }
                    break;
                case "resolve":
                    try {
                        List<String> found = new ArrayList<>();
                        for (InetAddress a : InetAddress.getAllByName(value)) {
                            found.add(a.getHostAddress());
                        }
                        say("resolve " + value + ": " + String.join(",", found));
                    } catch (IOException e) {
                        say("resolve " + value + ": failed (" + e + ")");
                    }
                    break;
                case "write":
                    try {
                        Files.writeString(Path.of(value, "opsprobe-" + task), "written by " + task);
                        say("write " + value + ": ok");
                    } catch (IOException e) {
                        say("write " + value + ": denied (" + e + ")");
                    }
                    break;
                case "read":
                    try {
                        say("read " + value + ": " + Files.readString(Path.of(value)).strip());
                    } catch (IOException e) {
                        say("read " + value + ": failed (" + e + ")");
                    }
                    break;
                case "mount":
                    say("mount " + value + ": " + mountMode(value));
                    break;
                case "orphan":
                    Process sh = new ProcessBuilder("/bin/sh", "-c", "sleep 2 >/dev/null 2>&1 & echo $!")
                            .redirectErrorStream(true).start();
                    String pid = new String(sh.getInputStream().readAllBytes()).strip();
                    sh.waitFor();
                    say("orphan pid=" + pid);
                    break;
                case "hold":
                    say("opsprobe holding");
                    while (true) {
                        Thread.sleep(60_000);
                    }
                default:
                    say("unknown probe " + arg);
                    System.exit(2);
            }
        }
        say("opsprobe done");
    }

    private static String mountMode(String dir) throws IOException {
        String mode = "none";
        // The last mount at a mount point is the one in effect.
        for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
            String[] f = line.split(" ");
            if (f.length > 5 && f[4].equals(dir)) {
                mode = List.of(f[5].split(",")).contains("ro") ? "ro" : "rw";
            }
        }
        return mode;
    }

    private static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }
}
