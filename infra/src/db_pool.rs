//! How every connection pool of ours checks its connections.
//!
//! sqlx's default pings a connection (one round trip to the database) every time it is
//! taken from the pool, on top of the ping it makes when one is given back. A member takes
//! a connection per batch and the checkout one per grouped write, back to back, so that
//! ping was a round trip on the path of every batch and every write (under load on two
//! cores about a millisecond each, PostgreSQL idle meanwhile). A connection that has been
//! in use moments ago is alive or fails its next statement like any other, and every
//! caller already treats a failed statement as a retry; only one left idle long enough to
//! have been dropped by a restart or a firewall is worth checking first.
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database};

/// A connection idle for longer than this is pinged before it is handed out.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(10);

/// `options` with connections pinged on taking only when idle for
/// [`PING_WHEN_IDLE_FOR`] or longer.
pub fn pinged_when_idle<DB: Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options.test_before_acquire(false).before_acquire(|conn, meta| {
        Box::pin(async move {
            if meta.idle_for >= PING_WHEN_IDLE_FOR {
                conn.ping().await?;
            }
            Ok(true)
        })
    })
}
