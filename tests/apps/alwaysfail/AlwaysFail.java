package lab.apps.alwaysfail;

/** Fails every time: drives the "Not Restarting" path after the restart attempts run out. */
public class AlwaysFail {
    public static void main(String[] args) {
        System.err.println("failing");
        System.err.flush();
        System.exit(1);
    }
}
