package lab.apps.ignoreterm;

import sun.misc.Signal;

/** Ignores SIGTERM (reporting each one), so only kill_timeout's force-kill can stop it. */
public class IgnoreTerm {
    public static void main(String[] args) throws Exception {
        Signal.handle(new Signal("TERM"), sig -> {
            System.out.println("ignoring SIGTERM");
            System.out.flush();
        });
        System.out.println("ignoreterm ready pid=" + ProcessHandle.current().pid());
        System.out.flush();
        while (true) {
            Thread.sleep(60_000);
        }
    }
}
