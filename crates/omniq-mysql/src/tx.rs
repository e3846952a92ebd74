//! Transactions on pooled connections that cannot be left open.

use std::ops::{Deref, DerefMut};

use omniq_storage::StoreResult;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, MySql, MySqlConnection, MySqlPool};

use crate::rows::store_error;

/// A transaction on a connection of the pool, ended by [`Tx::commit`]; dropped before its
/// commit (an error, a cancelled future) it closes its connection, and the server rolls the
/// transaction back.
///
/// Not sqlx's `Transaction`: sqlx 0.9.1's MySQL driver counts a transaction only once the
/// reply to its `BEGIN` has been read, so a future cancelled while `BEGIN` is in flight (a
/// worker stopping its maintenance, a store timeout) returns the connection to the pool
/// inside a transaction nothing ends. The statements the pool later runs on that connection
/// then run inside it, uncommitted (a heartbeat, a result, an event), and it holds its
/// tables' metadata locks, so a migration waits on it forever.
#[derive(Debug)]
pub(crate) struct Tx {
    conn: PoolConnection<MySql>,
    committed: bool,
}

impl Tx {
    /// Takes a connection and begins a transaction on it.
    pub(crate) async fn begin(pool: &MySqlPool) -> StoreResult<Self> {
        let conn = pool.acquire().await.map_err(store_error)?;
        // The guard exists before `BEGIN` is sent: from here on, whatever happens, the
        // connection goes back to the pool only after a commit.
        let mut tx = Self {
            conn,
            committed: false,
        };
        tx.conn.execute("BEGIN").await.map_err(store_error)?;
        Ok(tx)
    }

    /// Commits, and gives the connection back to the pool.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        self.conn.execute("COMMIT").await.map_err(store_error)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.committed {
            // Closing ends the session, which rolls back on the server. It costs a new
            // connection, on failure paths only.
            self.conn.close_on_drop();
        }
    }
}

impl Deref for Tx {
    type Target = MySqlConnection;
    fn deref(&self) -> &MySqlConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::str::FromStr;
    use std::task::Poll;
    use std::time::Duration;

    use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// How long the proxy holds each reply of the server: long enough that a `BEGIN`'s
    /// reply is never there when its future is first polled.
    const LATENCY: Duration = Duration::from_millis(20);

    /// A TCP proxy to `server` that delays what the server says by [`LATENCY`]: a slow
    /// network, so that a test can drop a future while its reply is on the way.
    async fn slow_proxy(server: (String, u16)) -> std::io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server.clone()).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                tokio::spawn(async move {
                    let mut chunk = vec![0u8; 64 * 1024];
                    while let Ok(n) = server_read.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(LATENCY).await;
                        if client_write.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(port)
    }

    /// A `BEGIN` whose future is dropped while its reply is on the way closes its
    /// connection, so no transaction outlives it (sqlx's own `pool.begin()` returns the
    /// connection to the pool, inside the transaction when the drop falls just so).
    #[tokio::test]
    async fn a_begin_cut_short_leaves_no_transaction_open() {
        let url = std::env::var("OMNIQ_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        let options = MySqlConnectOptions::from_str(&url).expect("the test URL");
        if let Err(err) = TcpStream::connect((options.get_host(), options.get_port())).await {
            assert!(
                std::env::var("OMNIQ_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "MySQL unavailable: {err}"
            );
            eprintln!("SKIPPED: MySQL unavailable ({err})");
            return;
        }
        let port = slow_proxy((options.get_host().to_owned(), options.get_port()))
            .await
            .expect("proxy");
        // No ping before handing out a connection: the first poll of a begin takes the idle
        // connection and sends `BEGIN` at once.
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.host("127.0.0.1").port(port))
            .await
            .expect("connect through the proxy");
        for _ in 0..5 {
            // An idle connection, so that the cut falls on `BEGIN`, not on connecting.
            let before: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                .fetch_one(&pool)
                .await
                .expect("connection id");
            // The pool pings a released connection (through the proxy) before it is idle.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while pool.num_idle() == 0 {
                assert!(tokio::time::Instant::now() < deadline, "never idle");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            {
                let mut begin = std::pin::pin!(Tx::begin(&pool));
                // A few polls, so that `BEGIN` has surely been written; its reply cannot be
                // back before the proxy's delay.
                for _ in 0..10 {
                    let polled =
                        std::future::poll_fn(|cx| Poll::Ready(begin.as_mut().poll(cx))).await;
                    assert!(
                        polled.is_pending(),
                        "BEGIN answered faster than the proxy allows"
                    );
                    tokio::task::yield_now().await;
                }
                // Dropped here, its reply on the way.
            }
            // The connection that may be mid-transaction was closed, not pooled: whatever
            // point of the round trip the drop fell on, no transaction can outlive it.
            let mut conn = pool.acquire().await.expect("acquire");
            let (after, open): (u64, u64) =
                sqlx::query_as("SELECT CONNECTION_ID(), @@in_transaction")
                    .fetch_one(&mut *conn)
                    .await
                    .expect("connection id");
            assert_ne!(
                before, after,
                "the connection cut mid-BEGIN went back to the pool"
            );
            assert_eq!(open, 0, "a transaction was left open");
        }
    }
}
