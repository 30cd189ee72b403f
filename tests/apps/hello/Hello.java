package lab.apps.hello;

import java.nio.file.Path;

/** Proves the basic path: stdout and stderr reach Nomad separately, args and env arrive. */
public class Hello {
    public static void main(String[] args) {
        System.out.println("hello from java-crun");
        System.out.flush();
        System.err.println("hello on stderr");
        System.err.flush();
        System.out.println("argc=" + args.length);
        for (int i = 0; i < args.length; i++) {
            System.out.println("arg[" + i + "]=" + args[i]);
        }
        printEnv("NOMAD_ALLOC_ID");
        printEnv("NOMAD_TASK_NAME");
        String extra = System.getenv("LAB_ECHO_ENV");
        if (extra != null) {
            for (String name : extra.split(",")) {
                if (!name.isBlank()) {
                    printEnv(name.trim());
                }
            }
        }
        System.out.println("cwd=" + Path.of("").toAbsolutePath());
        System.out.println("java.version=" + System.getProperty("java.version"));
        System.out.println("hello done");
        System.out.flush();
    }

    private static void printEnv(String name) {
        String value = System.getenv(name);
        // "<unset>" distinguishes a missing variable from an empty one.
        System.out.println("env " + name + "=" + (value == null ? "<unset>" : value));
    }
}
