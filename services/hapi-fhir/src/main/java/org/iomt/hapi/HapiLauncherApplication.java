package org.iomt.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchClientAutoConfiguration;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.security.servlet.UserDetailsServiceAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;
import org.springframework.context.annotation.Import;

/**
 * Entry point. HAPI ships its JPA server as Spring {@code @Configuration} classes;
 * we import only what an R4 server with batch/transaction, $expunge and
 * $validate needs. Subscription matching/delivery is left out on purpose (the
 * pipeline does not use FHIR Subscriptions, and it costs boot time), but the
 * submitter + channel configs are kept because JPA DAOs reference their beans.
 */
@SpringBootApplication(
		exclude = {
			// hibernate-search pulls the Elasticsearch client onto the classpath;
			// without these exclusions Boot would try to build a client for localhost:9200.
			ElasticsearchRestClientAutoConfiguration.class,
			ElasticsearchClientAutoConfiguration.class,
			// We build HAPI's own EntityManagerFactory in FhirJpaConfig.
			HibernateJpaAutoConfiguration.class,
			// Thymeleaf comes with HAPI (narratives); we serve no web pages.
			ThymeleafAutoConfiguration.class,
			// No users or passwords: SecurityConfig lets everything through, or
			// validates bearer JWTs (HAPI_AUTH_JWKS_URL).
			UserDetailsServiceAutoConfiguration.class
		})
@Import({
	ThreadPoolFactoryConfig.class,
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	SubscriptionSubmitterConfig.class,
	SubscriptionChannelConfig.class
})
public class HapiLauncherApplication {

	public static void main(String[] args) {
		SpringApplication.run(HapiLauncherApplication.class, args);
	}
}
