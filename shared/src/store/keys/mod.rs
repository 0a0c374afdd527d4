//! Limits per key: tasks sharing a `concurrencyKey` run at most N at once, tasks sharing a
//! `rateKey` start at most R per period, in every process together. A claim judges each due
//! task with a key ([`KeyBook`]) inside its own transaction: a task whose key is full is held,
//! pending and out of every claim's path, until its key has room ([`crate::store::Transition::Hold`]),
//! so it never stands in the way of other keys' tasks.

mod book;
mod limits;

pub use book::{BOOK_AHEAD, Booking, Holders, KeyBook, Need, Verdict};
pub use limits::{InvalidKeyLimits, KeyLimits, KeyRule, Rate};

/// The rules when none are configured: keys limit nothing.
pub static NO_LIMITS: KeyLimits = KeyLimits::none();

/// The most tasks one claim holds for their keys: a claim that reaches it ends after its round
/// (the rest stay due for the next), so a large backlog of one key never holds the store's
/// writer long in one transaction.
pub const HOLDS_PER_CLAIM: usize = 1000;

/// How soon a claim that left tasks due (at [`HOLDS_PER_CLAIM`], or on PostgreSQL their key
/// judged by another claim) asks its caller to look again, through the gate's noted holds.
pub const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(50);
