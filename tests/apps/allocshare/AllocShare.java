package lab.apps.allocshare;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Two tasks of one group share /alloc: "write FILE TEXT" writes /alloc/FILE; "read FILE [WAIT_S]"
 * waits up to WAIT_S seconds (default 60) for it and prints its content. Relative names resolve
 * against ALLOC_SHARE_DIR (default /alloc).
 */
public class AllocShare {
    public static void main(String[] args) throws Exception {
        if (args.length < 2 || !(args[0].equals("write") || args[0].equals("read"))) {
            System.err.println("allocshare: usage: allocshare write FILE TEXT | read FILE [WAIT_S]");
            System.exit(2);
        }
        Path file = Path.of(System.getenv().getOrDefault("ALLOC_SHARE_DIR", "/alloc/data")).resolve(args[1]);
        if (args[0].equals("write")) {
            String text = args.length > 2 ? args[2] : "shared";
            Path partial = file.resolveSibling(file.getFileName() + ".partial");
            Files.writeString(partial, text);
            // Rename so the reader never sees a half-written file.
            Files.move(partial, file, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            System.out.println("wrote " + file + ": " + text);
            System.out.flush();
            return;
        }
        double waitS = args.length > 2 ? Double.parseDouble(args[2]) : 60;
        long deadline = System.currentTimeMillis() + (long) (waitS * 1000);
        while (!Files.exists(file)) {
            if (System.currentTimeMillis() > deadline) {
                System.out.println("read " + file + ": missing after " + waitS + " s");
                System.out.flush();
                System.exit(1);
            }
            Thread.sleep(100);
        }
        System.out.println("read " + file + ": " + Files.readString(file));
        System.out.flush();
    }
}
