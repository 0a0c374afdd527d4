//! The store conformance suite, once per backend.

mod sqlite {
    use tasker::SqliteStore;

    async fn fresh() -> SqliteStore {
        SqliteStore::in_memory().expect("open in-memory SQLite")
    }

    tasker::store_conformance_tests!(fresh());
}

mod sqlite_file {
    use tasker::SqliteStore;

    /// The same cases on a WAL file, as `tasker serve` uses it.
    async fn fresh() -> SqliteStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("tasks.db")).expect("open SQLite file");
        // The directory must outlive the store; the OS cleans /tmp.
        std::mem::forget(dir);
        store
    }

    tasker::store_conformance_tests!(fresh());
}

mod dynamodb {
    tasker::store_conformance_tests!(tasker_tests::dynamo::fresh_store());
}

mod postgres {
    use tasker::store::postgres::PgStore;

    /// A new database on the test server for each case, metered: the blocked-work cases
    /// bound what a claim reads by PostgreSQL's own counters.
    async fn fresh() -> PgStore {
        let url = tasker_tests::postgres::fresh_database().await;
        PgStore::connect(&url, 4)
            .await
            .expect("connect to PostgreSQL")
            .metered()
    }

    tasker::store_conformance_tests!(fresh());
}
