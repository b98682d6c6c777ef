package org.iomt.hapi;

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * GET /fhir/.well-known/smart-configuration while bearer authentication is on
 * and HAPI_AUTH_TOKEN_URL is set: where a SMART Backend Services client asks
 * for its tokens (SMART App Launch 2, conformance.html), unauthenticated as the
 * specification has it. An exact servlet mapping wins over HAPI's /fhir/*.
 */
public class SmartConfigurationServlet extends HttpServlet {

	private final String body;

	public SmartConfigurationServlet(String tokenUrl, String issuer) {
		StringBuilder b = new StringBuilder("{");
		if (!issuer.isBlank()) b.append("\"issuer\":").append(quote(issuer)).append(',');
		b.append("\"token_endpoint\":").append(quote(tokenUrl)).append(',')
				.append("\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\",\"client_secret_basic\",\"client_secret_post\"],")
				.append("\"token_endpoint_auth_signing_alg_values_supported\":[\"RS384\",\"ES384\"],")
				.append("\"grant_types_supported\":[\"client_credentials\"],")
				.append("\"capabilities\":[\"client-confidential-asymmetric\",\"client-confidential-symmetric\"]}");
		this.body = b.toString();
	}

	private static String quote(String s) {
		return '"' + s.replace("\\", "\\\\").replace("\"", "\\\"") + '"';
	}

	@Override
	protected void doGet(HttpServletRequest req, HttpServletResponse res) throws IOException {
		res.setStatus(200);
		res.setContentType("application/json");
		res.setCharacterEncoding("UTF-8");
		res.getOutputStream().write(body.getBytes(StandardCharsets.UTF_8));
	}
}
