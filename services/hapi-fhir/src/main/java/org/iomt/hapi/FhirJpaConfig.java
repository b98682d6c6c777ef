package org.iomt.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.entity.StorageSettings;
import ca.uhn.fhir.rest.api.SearchTotalModeEnum;
import jakarta.persistence.EntityManagerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

import javax.sql.DataSource;
import java.util.Map;

/**
 * Storage-side beans HAPI expects the host application to provide:
 * storage settings, partition/subscription settings, the JPA EntityManagerFactory
 * and a transaction manager. The DataSource itself is Boot's Hikari pool
 * (configured from application*.properties / env).
 */
@Configuration
@EnableTransactionManagement
public class FhirJpaConfig {

	/** Server behaviour the pipeline's tests rely on. See README.md for the why of each. */
	@Bean
	public JpaStorageSettings storageSettings(
			@Value("${hapi.mass-ingestion:false}") boolean massIngestion,
			@Value("${hapi.expunge-enabled:true}") boolean expungeEnabled) {
		JpaStorageSettings s = new JpaStorageSettings();
		// Client-assigned ids (PUT Observation/{id} creates). ALPHANUMERIC requires at
		// least one non-digit: all-digit ids would clash with server-assigned numeric ids.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ALPHANUMERIC);
		// Never serve a cached search result: tests must see their writes at once.
		s.setReuseCachedSearchResultsForMillis(null);
		// Always fill Bundle.total (HAPI otherwise omits it on larger, paged searches).
		s.setDefaultTotalMode(SearchTotalModeEnum.ACCURATE);
		// Tests reset state with conditional DELETE (many matches) and $expunge.
		s.setAllowMultipleDelete(true);
		s.setExpungeEnabled(expungeEnabled);
		s.setDeleteExpungeEnabled(expungeEnabled);
		// Keep the default: a write referencing a missing resource fails (HTTP 400/404).
		s.setEnforceReferentialIntegrityOnWrite(true);
		s.setAutoCreatePlaceholderReferenceTargets(false);
		// Ingest-friendly: fewer index rows per resource.
		s.setIndexMissingFields(StorageSettings.IndexEnabledEnum.DISABLED); // no :missing searches
		s.setSuppressStringIndexingInTokens(true); // no :text on token params
		s.setAdvancedHSearchIndexing(false);
		s.setHibernateSearchIndexFullText(false);
		s.setHibernateSearchIndexSearchParams(false);
		// Opt-in: skips tag/profile updates on existing resources and caches ids harder.
		s.setMassIngestionMode(massIngestion);
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings(); // partitioning off
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings(); // no subscription channel types enabled
	}

	/**
	 * HAPI's factory bean registers its entity classes and its Hibernate tweaks; we
	 * only add dialect/DDL/batching. hbm2ddl=update creates the schema on first boot
	 * (Flyway/HAPI migrator are not used).
	 */
	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource dataSource,
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			@Value("${hapi.hibernate.dialect}") String dialect,
			@Value("${hapi.hibernate.ddl-auto:update}") String ddlAuto) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		emf.getJpaPropertyMap().putAll(Map.of(
				"hibernate.dialect", dialect,
				"hibernate.hbm2ddl.auto", ddlAuto,
				// hibernate-search is on the classpath but we want neither Lucene nor ES.
				"hibernate.search.enabled", "false",
				"hibernate.jdbc.batch_size", "50",
				"hibernate.order_inserts", "true",
				"hibernate.order_updates", "true",
				"hibernate.cache.use_query_cache", "false",
				"hibernate.cache.use_second_level_cache", "false",
				"hibernate.format_sql", "false",
				"hibernate.show_sql", "false"));
		return emf;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}
}
