// Docker healthcheck for the hapiproject/hapi image.
//
// That image is distroless: no shell, no curl, no wget, only `java`. Java 11+
// runs a single source file directly, so docker-compose.yml mounts this file and
// runs `java /opt/iomt/HealthCheck.java [url]`. It passes when GET /fhir/metadata
// answers 200 with a CapabilityStatement, i.e. the JPA server is up and its
// database schema is ready — not merely when Tomcat listens.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class HealthCheck {
  public static void main(String[] args) {
    String url = args.length > 0 ? args[0] : "http://127.0.0.1:8080/fhir/metadata";
    HttpClient client = HttpClient.newBuilder()
        .version(HttpClient.Version.HTTP_1_1) // no h2c upgrade attempt against Tomcat
        .connectTimeout(Duration.ofSeconds(5))
        .build();
    HttpRequest request = HttpRequest.newBuilder(URI.create(url))
        .timeout(Duration.ofSeconds(20))
        .header("Accept", "application/fhir+json")
        .GET()
        .build();
    try {
      HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
      if (response.statusCode() == 200 && response.body().contains("\"CapabilityStatement\"")) {
        System.exit(0);
      }
      System.err.println("unhealthy: " + url + " answered HTTP " + response.statusCode());
    } catch (Exception e) {
      System.err.println("unhealthy: " + url + ": " + e);
    }
    System.exit(1);
  }
}
