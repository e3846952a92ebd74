//! A transaction held open in another session for a whole run: on PostgreSQL it keeps
//! every row version a run creates from being cleaned up, which slows designs that leave
//! dead rows behind (a public queue table updated in place, say).

use crate::target::Target;

/// An open transaction, or nothing on backends where the scenario does not apply.
#[derive(Debug)]
pub struct Transaction {
    #[cfg(feature = "postgres")]
    conn: sqlx::PgConnection,
}

impl Transaction {
    /// Opens a transaction that has taken a snapshot, on `target` if it is PostgreSQL.
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn open(target: &mut Target) -> anyhow::Result<Option<Self>> {
        let settings = target.settings()?;
        let url = crate::target::url_of(&settings);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Ok(None);
        }
        Self::open_postgres(&url).await
    }

    #[cfg(feature = "postgres")]
    async fn open_postgres(url: &str) -> anyhow::Result<Option<Self>> {
        use sqlx::Connection;
        // OmniQ's own URL parameters mean nothing to the driver.
        let url = url.split_once('?').map_or(url, |(base, _)| base);
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut conn)
            .await?;
        // A snapshot and a transaction id: from here the horizon stays put.
        sqlx::query("SELECT txid_current()")
            .execute(&mut conn)
            .await?;
        Ok(Some(Self { conn }))
    }

    #[cfg(not(feature = "postgres"))]
    async fn open_postgres(_: &str) -> anyhow::Result<Option<Self>> {
        Ok(None)
    }

    /// Ends the transaction.
    ///
    /// # Errors
    /// The server went away.
    pub async fn close(self) -> anyhow::Result<()> {
        #[cfg(feature = "postgres")]
        {
            use sqlx::Connection;
            let mut conn = self.conn;
            sqlx::query("ROLLBACK").execute(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }
}
