package lab.apps.memhog;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.List;
import sun.misc.Unsafe;

/**
 * Allocates and touches memory in 16 MiB chunks until something stops it, so the container's
 * memory limit OOM-kills it. args[0]: "native" (default: malloc'd memory, independent of -Xmx)
 * or "heap" (byte arrays: needs a -Xmx above the limit). args[1]: optional cap in MiB; on
 * reaching it, it prints "memhog holding N MiB" and waits to be stopped.
 */
public class MemHog {
    private static final int CHUNK = 16 << 20;
    private static final int PAGE = 4096;

    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "native";
        long capMiB = args.length > 1 ? Long.parseLong(args[1]) : Long.MAX_VALUE;
        System.out.println("memhog started mode=" + mode + " max_heap_mib=" + (Runtime.getRuntime().maxMemory() >> 20));
        System.out.flush();
        Unsafe unsafe = mode.equals("native") ? unsafe() : null;
        List<byte[]> keep = new ArrayList<>();
        long total = 0;
        while (total < capMiB) {
            if (unsafe != null) {
                long address = unsafe.allocateMemory(CHUNK);
                // Touch every page: untouched memory is never charged to the cgroup.
                for (long off = 0; off < CHUNK; off += PAGE) {
                    unsafe.putByte(address + off, (byte) 1);
                }
            } else {
                try {
                    byte[] chunk = new byte[CHUNK];
                    for (int off = 0; off < CHUNK; off += PAGE) {
                        chunk[off] = 1;
                    }
                    keep.add(chunk);
                } catch (OutOfMemoryError e) {
                    keep.clear();
                    System.out.println("java heap exhausted at " + total + " MiB: raise -Xmx above the task's memory");
                    System.out.flush();
                    System.exit(3);
                }
            }
            total += CHUNK >> 20;
            System.out.println("allocated " + total + " MiB");
            System.out.flush();
        }
        System.out.println("memhog holding " + total + " MiB");
        System.out.flush();
        while (true) {
            Thread.sleep(60_000);
        }
    }

    private static Unsafe unsafe() throws Exception {
        Field field = Unsafe.class.getDeclaredField("theUnsafe");
        field.setAccessible(true);
        return (Unsafe) field.get(null);
    }
}
