package lab.apps.signals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import sun.misc.Signal;

/**
 * Reports every signal it receives as "signal: SIGXXX". SIGINT also ends it with 130, so a job's
 * kill_signal = "SIGINT" can be told apart from the default SIGTERM (which ends it with 143).
 */
public class Signals {
    private static final String[] REPORTED = {"HUP", "USR1", "USR2", "WINCH", "ALRM"};

    public static void main(String[] args) throws Exception {
        List<String> handled = new ArrayList<>();
        for (String name : REPORTED) {
            if (install(name, false)) {
                handled.add("SIG" + name);
            }
        }
        if (install("INT", true)) {
            handled.add("SIGINT");
        }
        // A JVM keeps a signal that was ignored when it started ignored (e.g. SIGINT for a
        // background job of a non-interactive shell), and Signal.handle does not say so.
        long ignored = sigIgn();
        handled.removeIf(name -> {
            boolean isIgnored = (ignored & (1L << (signalNumber(name) - 1))) != 0;
            if (isIgnored) {
                System.out.println("signal ignored since start: " + name + " (SigIgn inherited from the parent)");
            }
            return isIgnored;
        });
        System.out.println("signals ready pid=" + ProcessHandle.current().pid() + " handled=" + String.join(",", handled));
        System.out.flush();
        while (true) {
            Thread.sleep(60_000);
        }
    }

    private static long sigIgn() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("SigIgn:")) {
                    return Long.parseUnsignedLong(line.substring(7).trim(), 16);
                }
            }
        } catch (Exception e) {
            System.out.println("SigIgn unreadable: " + e);
        }
        return 0;
    }

    private static int signalNumber(String name) {
        return new Signal(name.substring(3)).getNumber();
    }

    private static boolean install(String name, boolean exitAfter) {
        try {
            Signal.handle(new Signal(name), sig -> {
                System.out.println("signal: SIG" + sig.getName());
                System.out.flush();
                if (exitAfter) {
                    System.out.println("exiting with 130 after SIG" + sig.getName());
                    System.out.flush();
                    System.exit(130);
                }
            });
            return true;
        } catch (IllegalArgumentException e) {
            // HotSpot refuses signals it reserves for itself; say so instead of failing.
            System.out.println("signal unavailable: SIG" + name + " (" + e.getMessage() + ")");
            return false;
        }
    }
}
