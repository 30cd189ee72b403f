package lab.apps.exitcode;

/** Exits with the code given as args[0], so exit-code reporting can be asserted. */
public class ExitCode {
    public static void main(String[] args) {
        int code;
        try {
            code = Integer.parseInt(args.length > 0 ? args[0] : "0");
        } catch (NumberFormatException e) {
            System.err.println("exitcode: usage: exitcode <integer> (got " + args[0] + ")");
            System.exit(2);
            return;
        }
        System.out.println("exiting with " + code);
        System.out.flush();
        System.exit(code);
    }
}
