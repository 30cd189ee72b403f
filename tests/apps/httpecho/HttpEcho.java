package lab.apps.httpecho;

import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A tiny HTTP server for group networking tests. args[0]: the port to listen on (default 8080),
 * on every address of its network namespace. Prints "httpecho interfaces=<names>" (the
 * interfaces it sees, sorted, comma-separated), then "httpecho listening port=<p>". Every
 * request gets "httpecho hostname=<h> path=<path>" and a line "served <path>" is printed.
 */
public class HttpEcho {
    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 8080;
        List<String> names = new ArrayList<>();
        for (NetworkInterface nif : Collections.list(NetworkInterface.getNetworkInterfaces())) {
            names.add(nif.getName());
        }
        Collections.sort(names);
        System.out.println("httpecho interfaces=" + String.join(",", names));
        System.out.flush();
        String hostname = InetAddress.getLocalHost().getHostName();
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 16);
        server.createContext("/", exchange -> {
            String path = exchange.getRequestURI().getPath();
            byte[] body = ("httpecho hostname=" + hostname + " path=" + path + "\n")
                    .getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
            System.out.println("served " + path);
            System.out.flush();
        });
        server.start();
        System.out.println("httpecho listening port=" + port);
        System.out.flush();
    }
}
