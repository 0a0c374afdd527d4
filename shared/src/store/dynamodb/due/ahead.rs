//! Read-ahead: the index entries a claim's scan read but did not reach, kept a moment for the
//! next claim. A processor that refills a few slots at a time would otherwise query every
//! shard on every claim (half a read unit each, however few entries it wants); with the
//! entries kept, it queries a shard again only when it has taken what the last page held.
//!
//! A kept reader goes on above the last entry it read, so an entry that lands behind that
//! point from another process waits for the next fresh scan: at most [`READ_AHEAD_AGE`]
//! later (this process's own writes there drop the reader at once). A task a kept reader
//! skips because it was open (a dead processor's lease, a type at its cap) is read again as
//! an open entry the moment its wait is over.

use std::time::Duration;

use super::ScanGoal;
use super::scan::ShardReader;
use super::state::Start;
use crate::clock::Timestamp;
use crate::store::ListKey;
use crate::store::dynamodb::schema::QUEUE_SHARDS;

/// How long readers are kept, counted from the fresh scan that made them (scans that go on
/// from them keep them no longer): under a second, then every shard is read afresh from its
/// cursor, which only a fresh reader moves.
pub const READ_AHEAD_AGE: Duration = Duration::from_secs(1);

/// The readers of the last claim's scan, since when they read, and the cursors it left.
#[derive(Debug)]
pub struct ReadAhead {
    /// Per shard; `None` once an entry was written behind what the reader read.
    readers: Vec<Option<ShardReader>>,
    /// When the oldest of them was made fresh.
    since: Timestamp,
    generations: Vec<u64>,
}

impl ReadAhead {
    /// Keeps `readers`, the oldest of them made fresh at `since`, with the cursors'
    /// `generations` after the scan.
    pub fn new(readers: Vec<ShardReader>, since: Timestamp, generations: Vec<u64>) -> Self {
        Self {
            readers: readers.into_iter().map(Some).collect(),
            since,
            generations,
        }
    }

    /// This process wrote the entry `key` in `shard` (a create, a retry, an outcome): if it
    /// sorts at or before what the shard's reader read, the next scan reads that shard afresh.
    pub fn entry_written(&mut self, shard: usize, key: &ListKey) {
        let Some(slot) = self.readers.get_mut(shard) else {
            return;
        };
        if slot
            .as_ref()
            .and_then(ShardReader::last_read)
            .is_some_and(|last| key <= last)
        {
            *slot = None;
        }
    }

    /// The readers of a scan for `goal` from `starts`: a shard's kept reader while it is
    /// fresh and its cursor has not moved since (a fall back to the watermark, another scan);
    /// a new one from the cursor otherwise. (An entry a kept reader skips that becomes due
    /// later, a lease that expires, is an open entry: the scan reads it again on its own.)
    /// With them, since when the oldest reader has read: kept readers stay no longer than the
    /// fresh scan that made them allows.
    pub fn readers(
        kept: Option<Self>,
        starts: &[Start],
        goal: &ScanGoal,
    ) -> (Vec<ShardReader>, Timestamp) {
        let fresh =
            |ahead: &Self| goal.now >= ahead.since && goal.now.since(ahead.since) < READ_AHEAD_AGE;
        let (mut kept, generations, since) = match kept.filter(fresh) {
            Some(ahead) => (ahead.readers, ahead.generations, ahead.since),
            None => (Vec::new(), Vec::new(), goal.now),
        };
        let readers = starts
            .iter()
            .zip(0..QUEUE_SHARDS)
            .map(|(start, shard)| {
                let i = shard as usize;
                let unmoved = generations.get(i) == Some(&start.generation);
                let reader = kept.get_mut(i).and_then(Option::take).filter(|_| unmoved);
                match reader {
                    Some(reader) => reader.resume(goal.upper.clone(), start.key.as_ref()),
                    None => ShardReader::new(shard, start.key.clone(), goal.upper.clone()),
                }
            })
            .collect();
        (readers, since)
    }
}
