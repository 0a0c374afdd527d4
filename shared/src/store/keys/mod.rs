//! Limits per key: tasks sharing a `concurrencyKey` run at most N at once, tasks sharing a
//! `rateKey` start at most R per period, in every process together. A claim judges each due
//! task with a key ([`KeyBook`]) inside its own transaction: a task whose key is full is held,
//! pending and out of every claim's path, until its key has room ([`crate::store::Transition::Hold`]),
//! so it never stands in the way of other keys' tasks.

mod book;
mod limits;

pub use book::{Holders, KeyBook, Need, Verdict};
pub use limits::{InvalidKeyLimits, KeyLimits, KeyRule, Rate};

/// The rules when none are configured: keys limit nothing.
pub static NO_LIMITS: KeyLimits = KeyLimits::none();
