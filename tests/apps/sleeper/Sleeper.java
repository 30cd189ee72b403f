package lab.apps.sleeper;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Runs until stopped (or for args[0] seconds, then exits with args[1], default 0).
 * On a stop (SIGTERM/SIGINT/SIGHUP) the JVM runs the shutdown hook, which takes
 * SHUTDOWN_DELAY_MS and then writes a marker file: proof that the signal reached the JVM
 * and that the driver waited for a graceful shutdown.
 */
public class Sleeper {
    public static void main(String[] args) throws Exception {
        long delayMs = envLong("SHUTDOWN_DELAY_MS", 0);
        long tickMs = envLong("TICK_MS", 0);
        String task = envOr("NOMAD_TASK_NAME", "task");
        Path marker = Path.of(envOr("SHUTDOWN_MARKER_DIR", "/alloc/data"), "shutdown-" + task);

        Thread hook = new Thread(() -> runHook(delayMs, marker), "shutdown-hook");
        Runtime.getRuntime().addShutdownHook(hook);
        System.out.println("sleeper started pid=" + ProcessHandle.current().pid()
                + " shutdown_delay_ms=" + delayMs + " marker=" + marker);
        System.out.flush();

        boolean forever = args.length == 0 || args[0].equals("forever");
        long deadline = forever ? Long.MAX_VALUE : System.currentTimeMillis() + (long) (Double.parseDouble(args[0]) * 1000);
        long tick = 0;
        while (System.currentTimeMillis() < deadline) {
            long left = deadline - System.currentTimeMillis();
            Thread.sleep(tickMs > 0 ? Math.min(tickMs, left) : Math.min(60_000, left));
            if (tickMs > 0) {
                System.out.println("tick " + (++tick));
                System.out.flush();
            }
        }
        // A normal end is not a stop: only a real shutdown should leave the marker.
        Runtime.getRuntime().removeShutdownHook(hook);
        int code = args.length > 1 ? Integer.parseInt(args[1]) : 0;
        System.out.println("sleeper finished, exiting with " + code);
        System.out.flush();
        System.exit(code);
    }

    private static void runHook(long delayMs, Path marker) {
        System.out.println("shutdown hook started delay_ms=" + delayMs);
        System.out.flush();
        try {
            if (delayMs > 0) {
                Thread.sleep(delayMs);
            }
            Files.writeString(marker, "shutdown hook ran after " + delayMs + " ms\n", StandardCharsets.UTF_8);
            System.out.println("shutdown hook ran marker=" + marker);
        } catch (Exception e) {
            System.out.println("shutdown hook ran marker failed: " + e);
        }
        System.out.flush();
    }

    private static String envOr(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static long envLong(String name, long fallback) {
        return Long.parseLong(envOr(name, Long.toString(fallback)));
    }
}
