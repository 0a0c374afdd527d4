//! The backend chosen at runtime from configuration: an enum over the backends this build
//! has, so the engine stays generic without `dyn`. Its [`Store`] implementation is made from
//! the interface's one list of methods.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;

use super::interface::store_methods;
use super::{
    Backlog, Claim, ClaimById, ClaimedById, Created, Deliverable, Expect, ListPage, Overview,
    PausedTypes, QueueReads, ScheduleWrite, Settlement, StatusCounts, Store, StoreError,
    SweepSummary, TaskPage, Throughput, TypeCounts, WaitingCounts,
};
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::task::{Task, TaskId};

/// The backend chosen at runtime from configuration.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Embedded SQLite, for one machine.
    #[cfg(feature = "sqlite")]
    Sqlite(super::SqliteStore),
    /// DynamoDB, for Lambda.
    #[cfg(feature = "dynamodb")]
    DynamoDb(super::DynamoStore),
    /// PostgreSQL, for several servers sharing the application's database.
    #[cfg(feature = "postgres")]
    Postgres(super::postgres::PgStore),
}

/// Each method calls the same one of whichever backend the store holds. The DynamoDB futures
/// are boxed: they nest deep enough that a Lambda's whole future would otherwise exceed the
/// compiler's layout depth in release builds, and a store call's network round trip dwarfs
/// one allocation.
macro_rules! dispatch_to_backend {
    ([] $(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store for AnyStore {
            $(
                fn $name(&self $(, $arg: $ty)*) -> impl Future<Output = $ret> + Send {
                    async move {
                        match self {
                            #[cfg(feature = "sqlite")]
                            Self::Sqlite(store) => store.$name($($arg),*).await,
                            #[cfg(feature = "dynamodb")]
                            Self::DynamoDb(store) => Box::pin(store.$name($($arg),*)).await,
                            #[cfg(feature = "postgres")]
                            Self::Postgres(store) => Box::pin(store.$name($($arg),*)).await,
                        }
                    }
                }
            )*
        }
    };
}

store_methods!(dispatch_to_backend);
