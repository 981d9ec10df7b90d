//! `orderflow migrate`: brings a database to this release's catalog (the checkout's table,
//! the projections' migrations, tables and views) and creates the services' PostgreSQL
//! roles and grants. Run once as the owner; services then run under their own roles.
use clap::Args;

use crate::args::DatabaseUrlArgs;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseUrlArgs,
}

impl MigrateArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let url = &self.database.database_url;
        // The checkout's table first, so that the catalog step grants it too.
        let lease = producers::idempotency::LEASE_MARGIN;
        producers::idempotency::IdempotencyStore::connect(url, lease).await?;
        projections::store::Store::connect(url).await?;
        println!("migrated {}", crate::demo::database_label(url));
        if url.starts_with("postgres") {
            println!(
                "roles (LOGIN, no password; give each one with ALTER ROLE … PASSWORD): {}",
                projections::store::schema::SERVICE_ROLES.join(", ")
            );
        }
        Ok(())
    }
}
