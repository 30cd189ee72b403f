package lab.apps.bigoutput;

import java.io.BufferedOutputStream;
import java.io.PrintStream;

/** Prints args[0] (default 5000) numbered lines, so log completeness and order can be checked. */
public class BigOutput {
    public static void main(String[] args) {
        int count = args.length > 0 ? Integer.parseInt(args[0]) : 5000;
        PrintStream out = new PrintStream(new BufferedOutputStream(System.out, 1 << 16), false);
        for (int i = 1; i <= count; i++) {
            out.printf("line %06d the quick brown fox jumps over the lazy dog%n", i);
        }
        out.println("bigoutput done lines=" + count);
        out.flush();
    }
}
