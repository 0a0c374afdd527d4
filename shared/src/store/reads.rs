//! What a store instance's claims have read, counted by the store itself: the conformance
//! suite bounds a claim's reads by what it returns, whatever is blocked ahead of it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The reads of a store instance's claims so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueReads {
    /// Index entries the claims stepped over: on DynamoDB the due queue's entries a scan took
    /// (read or known), on SQLite the claim statements' virtual-machine steps
    /// (`SQLITE_STMTSTATUS_VM_STEP`), which grow with every row a statement visits; on
    /// PostgreSQL the rows read by index or scan as its statistics count them, for a store
    /// made `metered` (0 otherwise).
    pub entries: u64,
    /// Items read: on DynamoDB the task items a scan read, on SQLite and PostgreSQL the rows
    /// the claim statements returned.
    pub items: u64,
}

/// The counters behind [`QueueReads`], shared by a store's clones.
#[derive(Debug, Default)]
pub struct ReadCounter {
    entries: AtomicU64,
    items: AtomicU64,
}

impl ReadCounter {
    /// Adds a claim's reads.
    pub fn add(&self, entries: u64, items: usize) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
        let items = u64::try_from(items).unwrap_or(u64::MAX);
        self.items.fetch_add(items, Ordering::Relaxed);
    }

    /// The reads so far.
    pub fn get(&self) -> QueueReads {
        QueueReads {
            entries: self.entries.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
        }
    }
}
