package org.iomt.hapi;

import com.nimbusds.jose.JOSEObjectType;
import com.nimbusds.jose.proc.DefaultJOSEObjectTypeVerifier;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.autoconfigure.condition.ConditionalOnExpression;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.security.config.annotation.web.builders.HttpSecurity;
import org.springframework.security.config.annotation.web.configuration.EnableWebSecurity;
import org.springframework.security.config.http.SessionCreationPolicy;
import org.springframework.security.oauth2.core.DelegatingOAuth2TokenValidator;
import org.springframework.security.oauth2.core.OAuth2Error;
import org.springframework.security.oauth2.core.OAuth2TokenValidator;
import org.springframework.security.oauth2.core.OAuth2TokenValidatorResult;
import org.springframework.security.oauth2.jose.jws.SignatureAlgorithm;
import org.springframework.security.oauth2.jwt.Jwt;
import org.springframework.security.oauth2.jwt.JwtTimestampValidator;
import org.springframework.security.oauth2.jwt.JwtIssuerValidator;
import org.springframework.security.oauth2.jwt.NimbusJwtDecoder;
import org.springframework.security.web.SecurityFilterChain;

/**
 * Opt-in bearer authentication, as an OAuth 2.0-protected FHIR server has it.
 *
 * <ul>
 *   <li>{@code HAPI_AUTH_JWKS_URL} unset (default): no authentication, every
 *       request passes, as before.
 *   <li>set: every request but the health endpoint needs {@code Authorization:
 *       Bearer <JWT>}, signed by a key of that JWKS (RS256/384/512,
 *       ES256/384), unexpired; with {@code HAPI_AUTH_ISSUER} its {@code iss}
 *       must be that issuer, with {@code HAPI_AUTH_AUDIENCE} its {@code aud}
 *       must hold that audience. Anything else is answered 401 with
 *       {@code WWW-Authenticate: Bearer error="invalid_token"} (RFC 6750).
 *       With {@code HAPI_AUTH_TOKEN_URL}, {@code /fhir/.well-known/smart-configuration}
 *       names that token endpoint (SMART discovery), unauthenticated.
 * </ul>
 */
@Configuration
@EnableWebSecurity
public class SecurityConfig {

	private static final Logger log = LoggerFactory.getLogger(SecurityConfig.class);
	static final String SMART_CONFIGURATION = "/fhir/.well-known/smart-configuration";

	/** SMART discovery, while authentication is on and HAPI_AUTH_TOKEN_URL names the token endpoint. */
	@Bean
	@ConditionalOnExpression("!'${hapi.auth.jwks-url:}'.isBlank() && !'${hapi.auth.token-url:}'.isBlank()")
	public ServletRegistrationBean<SmartConfigurationServlet> smartConfiguration(
			@Value("${hapi.auth.token-url}") String tokenUrl, @Value("${hapi.auth.issuer:}") String issuer) {
		ServletRegistrationBean<SmartConfigurationServlet> reg =
				new ServletRegistrationBean<>(new SmartConfigurationServlet(tokenUrl, issuer), SMART_CONFIGURATION);
		reg.setName("smart-configuration");
		return reg;
	}

	@Bean
	public SecurityFilterChain securityFilterChain(
			HttpSecurity http,
			@Value("${hapi.auth.jwks-url:}") String jwksUrl,
			@Value("${hapi.auth.issuer:}") String issuer,
			@Value("${hapi.auth.audience:}") String audience)
			throws Exception {
		http.csrf(c -> c.disable())
				.sessionManagement(s -> s.sessionCreationPolicy(SessionCreationPolicy.STATELESS))
				.requestCache(r -> r.disable())
				.formLogin(f -> f.disable())
				.httpBasic(b -> b.disable())
				.logout(l -> l.disable());
		if (jwksUrl.isBlank()) {
			http.authorizeHttpRequests(a -> a.anyRequest().permitAll());
			return http.build();
		}
		NimbusJwtDecoder decoder = NimbusJwtDecoder.withJwkSetUri(jwksUrl)
				.jwsAlgorithms(algs -> {
					algs.add(SignatureAlgorithm.RS256);
					algs.add(SignatureAlgorithm.RS384);
					algs.add(SignatureAlgorithm.RS512);
					algs.add(SignatureAlgorithm.ES256);
					algs.add(SignatureAlgorithm.ES384);
				})
				// RFC 9068 access tokens are typed at+jwt; older servers send JWT or nothing.
				.jwtProcessorCustomizer(p -> p.setJWSTypeVerifier(new DefaultJOSEObjectTypeVerifier<>(
						JOSEObjectType.JWT, new JOSEObjectType("at+jwt"), null)))
				.build();
		List<OAuth2TokenValidator<Jwt>> validators = new ArrayList<>();
		validators.add(new JwtTimestampValidator(java.time.Duration.ZERO));
		if (!issuer.isBlank()) validators.add(new JwtIssuerValidator(issuer));
		if (!audience.isBlank()) {
			validators.add(jwt -> jwt.getAudience() != null && jwt.getAudience().contains(audience)
					? OAuth2TokenValidatorResult.success()
					: OAuth2TokenValidatorResult.failure(
							new OAuth2Error("invalid_token", "the token is not meant for this audience", null)));
		}
		decoder.setJwtValidator(new DelegatingOAuth2TokenValidator<>(validators));
		http.authorizeHttpRequests(a -> a.requestMatchers(
								"/actuator/health/**", "/actuator/health", SMART_CONFIGURATION)
						.permitAll()
						.anyRequest()
						.authenticated())
				.oauth2ResourceServer(o -> o.jwt(j -> j.decoder(decoder)));
		log.info("bearer authentication on: JWTs verified against {}", jwksUrl);
		return http.build();
	}
}
