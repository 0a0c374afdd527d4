//! The counts per status (`task_counts`) for status changes, kept by the group commit instead
//! of a trigger per row. Each change a group's writes make is noted here, on the thread that
//! runs the group, and the group writes each status's net change once, in its transaction,
//! just before the commit: a drain's claim and outcome each changed two count rows per task
//! by trigger; a group now changes at most five. Creates and purges still count by trigger
//! (one row each).
//!
//! Every status change goes through `rows::update_where` inside a group write, which notes it;
//! a write that fails has its notes undone with it.

use std::cell::Cell;

use rusqlite::Connection;

use crate::task::TaskStatus;

/// Net change per status, in [`TaskStatus::ALL`]'s order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Changes([i64; 5]);

thread_local! {
    /// The changes noted on this thread since the group began.
    static NOTED: Cell<Changes> = const { Cell::new(Changes([0; 5])) };
}

fn slot(status: TaskStatus) -> usize {
    TaskStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or_default()
}

/// Notes that a row's status went from `before` to `after` in this thread's transaction.
pub(super) fn note(before: TaskStatus, after: TaskStatus) {
    if before == after {
        return;
    }
    let mut changes = NOTED.get();
    changes.0[slot(before)] -= 1;
    changes.0[slot(after)] += 1;
    NOTED.set(changes);
}

/// The changes noted so far (they stay noted).
pub(super) fn noted() -> Changes {
    NOTED.get()
}

/// Forgets the changes noted after `mark` (a write that failed).
pub(super) fn undo_to(mark: Changes) {
    NOTED.set(mark);
}

/// The changes noted so far, forgotten here.
pub(super) fn take() -> Changes {
    NOTED.replace(Changes::default())
}

/// Writes `changes` into `task_counts`, one statement per status that changed.
pub(super) fn write(conn: &Connection, changes: Changes) -> rusqlite::Result<()> {
    for (status, delta) in TaskStatus::ALL.iter().zip(changes.0) {
        if delta != 0 {
            conn.prepare_cached("UPDATE task_counts SET n = n + ?2 WHERE status = ?1")?
                .execute(rusqlite::params![status.as_str(), delta])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_net_out_and_undo_to_a_mark() {
        take();
        note(TaskStatus::Pending, TaskStatus::Running);
        note(TaskStatus::Running, TaskStatus::Succeeded);
        let mark = noted();
        note(TaskStatus::Pending, TaskStatus::Running);
        note(TaskStatus::Failed, TaskStatus::Failed);
        undo_to(mark);
        assert_eq!(take(), Changes([-1, 0, 1, 0, 0]));
        assert_eq!(take(), Changes::default(), "taken");
    }
}
