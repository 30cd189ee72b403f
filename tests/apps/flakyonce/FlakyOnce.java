package lab.apps.flakyonce;

import java.nio.file.Files;
import java.nio.file.Path;

/** Fails the first run and succeeds the next: the marker lives in the alloc dir, which survives a restart. */
public class FlakyOnce {
    public static void main(String[] args) throws Exception {
        String dir = System.getenv().getOrDefault("FLAKY_MARKER_DIR", "/alloc/data");
        String task = System.getenv().getOrDefault("NOMAD_TASK_NAME", "task");
        Path marker = Path.of(dir, "flaky-" + task);
        if (!Files.exists(marker)) {
            Files.writeString(marker, "failed once\n");
            System.out.println("failing once marker=" + marker);
            System.out.flush();
            System.exit(1);
        }
        System.out.println("succeeded after restart marker=" + marker);
        System.out.flush();
    }
}
