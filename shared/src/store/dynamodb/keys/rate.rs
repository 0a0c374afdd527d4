//! Rate keys: one item per key (`rate#<key>`, its `nextStart`: GCRA's theoretical arrival
//! time), read consistently by a claim round that meets the key and moved by one conditional
//! write per key and round before the round claims the key's tasks. The item expires (TTL) a
//! retention after its next start. In SQS mode the item also keeps the first start it has not
//! booked for a held task yet ([`crate::store::Booking`]).

use super::super::DynamoStore;
use super::super::expr::Expr;
use std::time::Duration;

use super::super::item::{Item, n, s};
use super::super::schema::{BOOKED_UNTIL, EXPIRES_AT, ID, NEXT_START, RATE_PREFIX};
use super::super::table::Write;
use crate::clock::Timestamp;
use crate::store::{Booking, StoreError};

/// Tries of a booking that another process's booking keeps overtaking.
const BOOKING_TRIES: usize = 3;

fn millis(at: Timestamp) -> u128 {
    at.since(Timestamp::MIN).as_millis()
}

/// The booked-until instant of `item` (as an update returned it or a failed condition found it).
fn booked_until(item: &Item) -> Option<Timestamp> {
    let text = item.get(BOOKED_UNTIL)?.as_n().ok()?;
    let millis: u64 = text.parse().ok()?;
    Some(Timestamp::MIN.plus(Duration::from_millis(millis)))
}

fn item_id(key: &str) -> String {
    format!("{RATE_PREFIX}{key}")
}

impl DynamoStore {
    /// The rate key `key`'s next start, if it ever started a task (one consistent read).
    pub(super) async fn next_start(&self, key: &str) -> Result<Option<Timestamp>, StoreError> {
        let Some(item) = self.table.get(&item_id(key)).await? else {
            return Ok(None);
        };
        item.get(NEXT_START)
            .and_then(|value| value.as_s().ok())
            .map(|text| {
                text.parse()
                    .map_err(|err| StoreError::backend_from("a rate key's next start", err))
            })
            .transpose()
    }

    /// Moves `key`'s next start to `next` if it is still `read`: false when another process
    /// moved it first.
    pub(super) async fn move_next_start(
        &self,
        key: &str,
        read: Option<Timestamp>,
        next: Timestamp,
    ) -> Result<bool, StoreError> {
        let update = Expr::new("SET #next = :next, #expires = :expires")
            .name("#next", NEXT_START)
            .name("#expires", EXPIRES_AT)
            .value(":next", s(next.to_text()))
            .value(":expires", n(next.plus(self.ttl_after).unix_seconds()));
        let condition = match read {
            None => Expr::new("attribute_not_exists(#id)").name("#id", ID),
            Some(read) => Expr::new("#next = :read")
                .name("#next", NEXT_START)
                .value(":read", s(read.to_text())),
        };
        Ok(matches!(
            self.table.update(&item_id(key), update, condition).await?,
            Write::Done(())
        ))
    }

    /// Books a start of the rate key for a held task ([`Booking`]): one write, an atomic add
    /// of one interval while the key's booked starts run between `booking.earliest` and
    /// `booking.latest`, else a conditional set from `earliest` (the first booking of a key
    /// costs a failed add and the set). Answers the start booked, or [`Booking::beyond`] when
    /// the bookings run past `latest`; a key item gone (expired) books nothing, and nor does
    /// a key other bookings keep overtaking: the task is held until `earliest` then.
    pub(in crate::store::dynamodb) async fn book_start(
        &self,
        booking: &Booking<'_>,
    ) -> Result<Timestamp, StoreError> {
        let Some((first, first_after)) = booking.start(None) else {
            return Ok(booking.beyond());
        };
        let key = item_id(booking.key);
        let earliest = millis(booking.earliest);
        for _ in 0..BOOKING_TRIES {
            let add = Expr::new("SET #booked = #booked + :interval")
                .name("#booked", BOOKED_UNTIL)
                .value(":interval", n(booking.interval.as_millis()));
            let between = Expr::new("#booked BETWEEN :earliest AND :latest")
                .name("#booked", BOOKED_UNTIL)
                .value(":earliest", n(earliest))
                .value(":latest", n(millis(booking.latest)));
            match self.table.update_returning(&key, add, between).await? {
                Write::Done(item) => {
                    let after = booked_until(&item).unwrap_or(first_after);
                    return Ok(after.minus(booking.interval));
                }
                Write::ConditionFailed(old) => {
                    let booked = old.as_ref().and_then(booked_until);
                    if booked.is_some_and(|at| at > booking.latest) {
                        return Ok(booking.beyond());
                    }
                }
            }
            let set = Expr::new("SET #booked = :after")
                .name("#booked", BOOKED_UNTIL)
                .value(":after", n(millis(first_after)));
            let behind = Expr::new(
                "attribute_exists(#id) AND (attribute_not_exists(#booked) OR #booked < :earliest)",
            )
            .name("#id", ID)
            .name("#booked", BOOKED_UNTIL)
            .value(":earliest", n(earliest));
            match self.table.update(&key, set, behind).await? {
                Write::Done(()) => return Ok(first),
                Write::ConditionFailed(None) => return Ok(booking.earliest),
                // Another booking moved it past `earliest` meanwhile: add after it.
                Write::ConditionFailed(Some(_)) => {}
            }
        }
        Ok(booking.earliest)
    }

    /// See [`crate::store::Store::key_defer`]: the key's next start moves to `until` unless it
    /// is later already.
    pub async fn key_defer(&self, key: &str, until: Timestamp) -> Result<(), StoreError> {
        let update = Expr::new("SET #next = :until, #expires = :expires")
            .name("#next", NEXT_START)
            .name("#expires", EXPIRES_AT)
            .value(":until", s(until.to_text()))
            .value(":expires", n(until.plus(self.ttl_after).unix_seconds()));
        let condition = Expr::new("attribute_not_exists(#id) OR #next < :until")
            .name("#id", ID)
            .name("#next", NEXT_START)
            .value(":until", s(until.to_text()));
        // A later next start stands: nothing to write then.
        self.table
            .update(&item_id(key), update, condition)
            .await
            .map(|_| ())
    }
}
