//! Schema migrations of the stores a [`Settings`] names, for `omniq migrate` and for
//! deployments that migrate before they roll out (`migrate=check` in the store URLs).

use omniq_config::{Backend, Settings, StoreKind, StoreUrl};
use omniq_storage::{MigrateBackend, MigrationStatus};

use crate::{Error, Result};

/// Where one store URL's schema stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchemaReport {
    /// The store URL (shown redacted by its `Display`).
    pub url: StoreUrl,
    /// The stores the settings keep at that URL.
    pub stores: Vec<StoreKind>,
    /// Its migrations; `None` for a backend without a schema to migrate (Redis, NATS,
    /// object stores and memory keep their layout without migrations).
    pub status: Option<MigrationStatus>,
}

/// The migration entry point of each SQL backend this build includes.
fn migrator(backend: Backend) -> Option<MigrateBackend> {
    match backend {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Some(omniq_sqlite::migrate_url),
        #[cfg(feature = "postgres")]
        Backend::Postgres => Some(omniq_postgres::migrate_url),
        #[cfg(feature = "mysql")]
        Backend::Mysql => Some(omniq_mysql::migrate_url),
        _ => None,
    }
}

/// Where the schema of each store the settings name stands; applies nothing.
///
/// # Errors
/// A store that cannot be reached, or a SQL backend this build does not include.
pub async fn schema_status(settings: &Settings) -> Result<Vec<SchemaReport>> {
    reports(settings, false).await
}

/// Applies the pending schema migrations of each store the settings name, under each
/// backend's migration lock (safe beside workers that are starting), and reports where
/// each schema stands after.
///
/// # Errors
/// A store that cannot be reached, a migration that failed (those before it stay
/// applied), or a SQL backend this build does not include.
pub async fn migrate(settings: &Settings) -> Result<Vec<SchemaReport>> {
    reports(settings, true).await
}

async fn reports(settings: &Settings, apply: bool) -> Result<Vec<SchemaReport>> {
    let mut reports: Vec<SchemaReport> = Vec::new();
    for kind in StoreKind::ALL {
        let url = settings.store_url(kind);
        if let Some(report) = reports.iter_mut().find(|r| r.url == url) {
            report.stores.push(kind);
            continue;
        }
        let backend = url.backend();
        let status = match migrator(backend) {
            Some(migrate) => Some(migrate(url.as_str(), apply).await?),
            None if matches!(
                backend,
                Backend::Sqlite | Backend::Postgres | Backend::Mysql
            ) =>
            {
                return Err(Error::BackendNotIncluded {
                    key: kind.key(),
                    backend,
                });
            }
            None => None,
        };
        reports.push(SchemaReport {
            url,
            stores: vec![kind],
            status,
        });
    }
    Ok(reports)
}
