//! The PostgreSQL backend's foundation: a bounded pool of connections to the application's own
//! database and Tasker's schema in it (`tasker`), brought up to date at start by
//! [`schema::migrate`], safely when several processes start at once. The store interface on
//! top of it (claims with `FOR UPDATE SKIP LOCKED`, wake-ups with `LISTEN/NOTIFY`) is issue 29's
//! next step; until then `TASKER_STORE` does not offer it.

pub mod schema;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::StoreError;

/// Connections a pool opens at most unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How long a call waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Tasker's tables in one PostgreSQL database, through a bounded pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("max_size", &status.max_size)
            .field("open", &status.size)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/database`, or key=value
    /// pairs) with at most `pool_size` connections, and brings Tasker's schema up to date.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url).map_err(|err| {
            StoreError::backend_from(
                "TASKER_DATABASE_URL is not a PostgreSQL connection URL",
                err,
            )
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|err| StoreError::backend_from("building the connection pool", err))?;
        let store = Self { pool };
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|err| match err {
            deadpool_postgres::PoolError::Backend(err) => pg_error("connecting to PostgreSQL", err),
            other => StoreError::unavailable_from("waiting for a PostgreSQL connection", other),
        })
    }

    /// The version of Tasker's schema in the database.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        schema::version(&**client).await
    }
}

/// A PostgreSQL error as a store error: passing (retryable) when the connection failed or the
/// server said so (serialization failures, deadlocks, too many connections, shutting down),
/// lasting otherwise.
pub(crate) fn pg_error(context: &str, err: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let passing = match err.code() {
        None => err.is_closed() || err.as_db_error().is_none(),
        Some(code) => [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code),
    };
    if passing {
        StoreError::unavailable_from(context.to_owned(), err)
    } else {
        StoreError::backend_from(context.to_owned(), err)
    }
}
