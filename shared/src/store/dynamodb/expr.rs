//! Expressions with their attribute names and values: the conditions and updates Tasker
//! writes, each built by one named function here from the texts in [`super::schema`].

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Item, OpenMark, queue_of, s};
use super::schema::{self, names};
use crate::clock::Timestamp;
use crate::store::ListKey;
use crate::task::{TaskId, TaskStatus};

/// An expression, the attribute names it uses (`#x`) and its values (`:x`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expr {
    /// The expression text.
    pub text: String,
    /// Placeholder → attribute name.
    pub names: HashMap<String, String>,
    /// Placeholder → value.
    pub values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// An expression that uses no placeholders, or adds them next.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Binds the name placeholder `placeholder` to `name`.
    pub fn name(mut self, placeholder: &str, name: &str) -> Self {
        self.names.insert(placeholder.to_owned(), name.to_owned());
        self
    }

    /// Binds the value placeholder `placeholder` to `value`.
    pub fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// The names and values of this expression and of `also`, if given: a request carries
    /// one map of each for all its expressions.
    pub fn bindings(&self, also: Option<&Self>) -> (Option<Names>, Option<Values>) {
        let mut names = self.names.clone();
        let mut values = self.values.clone();
        if let Some(also) = also {
            names.extend(also.names.clone());
            values.extend(also.values.clone());
        }
        (
            (!names.is_empty()).then_some(names),
            (!values.is_empty()).then_some(values),
        )
    }
}

/// Placeholder → attribute name.
pub type Names = HashMap<String, String>;
/// Placeholder → value.
pub type Values = HashMap<String, AttributeValue>;

/// The update that turns the stored item `before` into `after`: `SET` for every attribute
/// that differs, `REMOVE` for every one that is gone. Only what changed is written, so a
/// claim or a success, which leave the queue keys alone, do not write the index.
pub fn changes(before: &Item, after: &Item) -> Expr {
    let mut changed: Vec<(&String, &AttributeValue)> = after
        .iter()
        .filter(|(name, value)| name.as_str() != schema::ID && before.get(*name) != Some(*value))
        .collect();
    changed.sort_by(|a, b| a.0.cmp(b.0));
    let mut gone: Vec<&String> = before
        .keys()
        .filter(|name| !after.contains_key(*name))
        .collect();
    gone.sort();
    let mut expr = Expr::default();
    let mut set = Vec::new();
    for (i, (name, value)) in changed.into_iter().enumerate() {
        expr = expr
            .name(&format!("#s{i}"), name)
            .value(&format!(":s{i}"), value.clone());
        set.push(format!("#s{i} = :s{i}"));
    }
    let mut remove = Vec::new();
    for (i, name) in gone.into_iter().enumerate() {
        expr = expr.name(&format!("#r{i}"), name);
        remove.push(format!("#r{i}"));
    }
    let mut clauses = Vec::new();
    if !set.is_empty() {
        clauses.push(format!("SET {}", set.join(", ")));
    }
    if !remove.is_empty() {
        clauses.push(format!("REMOVE {}", remove.join(", ")));
    }
    expr.text = clauses.join(" ");
    expr
}

/// The task item is still `before`, as far as any transition can tell: every transition
/// changes at least one of the [`schema::FINGERPRINT`] attributes, and a claim's token is
/// unique, so a write under this condition applies to exactly the state it was computed from.
pub fn unchanged(before: &Item) -> Expr {
    let mut expr = Expr::default();
    let mut terms = Vec::new();
    for (i, attribute) in schema::FINGERPRINT.iter().enumerate() {
        let name = format!("#f{i}");
        expr = expr.name(&name, attribute);
        match before.get(*attribute) {
            Some(value) => {
                let placeholder = format!(":f{i}");
                terms.push(format!("{name} = {placeholder}"));
                expr = expr.value(&placeholder, value.clone());
            }
            None => terms.push(format!("attribute_not_exists({name})")),
        }
    }
    expr.text = terms.join(" AND ");
    expr
}

/// The item must not exist yet.
pub fn new_item() -> Expr {
    Expr::new(schema::COND_NEW_ITEM)
}

/// The item must exist.
pub fn item_exists() -> Expr {
    Expr::new(schema::COND_ITEM_EXISTS)
}

/// The schedule item is still at `revision`.
pub fn at_revision(revision: u64) -> Expr {
    Expr::new(schema::COND_REVISION).value(":revision", super::item::n(revision))
}

/// A guard still names `task_id` (deleting it, or re-taking it in a retry).
pub fn guard_held_by(task_id: &str) -> Expr {
    Expr::new(schema::COND_GUARD_HELD_BY).value(":task", s(task_id))
}

/// A guard still names `holder` at the version read (`None`: one written before guards
/// carried a version).
pub fn guard_as_read(holder: &str, version: Option<&str>) -> Expr {
    match version {
        Some(version) => Expr::new(schema::COND_GUARD_VERSION)
            .value(":task", s(holder))
            .value(":version", s(version)),
        None => Expr::new(schema::COND_GUARD_UNVERSIONED).value(":task", s(holder)),
    }
}

/// A watermark only rises, to `up_to`.
pub fn watermark_rises(up_to: &str) -> Expr {
    Expr::new(schema::COND_WATERMARK_RISES).value(":up_to", s(up_to))
}

/// The update that sets a watermark to `up_to` at `now`, with the `open` entries below it.
pub fn set_watermark(up_to: &str, now: Timestamp, open: &[OpenMark]) -> Expr {
    let open = open
        .iter()
        .map(|mark| {
            AttributeValue::M(HashMap::from([
                ("k".to_owned(), s(&mark.key)),
                ("t".to_owned(), s(&mark.task_type)),
                ("u".to_owned(), s(&mark.until)),
            ]))
        })
        .collect();
    Expr::new(schema::UPDATE_WATERMARK)
        .value(":up_to", s(up_to))
        .value(":now", s(now.to_text()))
        .value(":open", AttributeValue::L(open))
}

/// The sweep's progress is still the one read: at `version`, or none at all.
pub fn progress_as_read(version: Option<&str>) -> Expr {
    match version {
        Some(version) => Expr::new(schema::COND_VERSION).value(":version", s(version)),
        None => new_item(),
    }
}

/// A succeeded task that finished at or before `cutoff`.
pub fn purgeable_success(cutoff: Timestamp) -> Expr {
    Expr::new(schema::COND_PURGEABLE_SUCCESS)
        .name(names::STATUS, schema::STATUS)
        .value(":succeeded", s(TaskStatus::Succeeded.as_str()))
        .value(":cutoff", s(cutoff.to_text()))
}

/// The failed or cancelled task `id`, finished at or before `cutoff`.
pub fn purgeable_finished(id: TaskId, cutoff: Timestamp) -> Expr {
    Expr::new(schema::COND_PURGEABLE)
        .name(names::QUEUE, schema::QUEUE)
        .value(":failed_queue", s(queue_of(id, TaskStatus::Failed)))
        .value(":cancelled_queue", s(queue_of(id, TaskStatus::Cancelled)))
        .value(":cutoff", s(ListKey::after_all_at(cutoff).0))
}

#[cfg(test)]
mod tests {
    use super::super::item::n;
    use super::*;

    #[test]
    fn changes_set_what_differs_and_remove_what_is_gone() {
        let before: Item = [
            ("id", s("a")),
            ("status", s("running")),
            ("leaseExpiresAt", s("x")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let after: Item = [
            ("id", s("a")),
            ("status", s("succeeded")),
            ("attempts", n(1)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let update = changes(&before, &after);
        assert_eq!(update.text, "SET #s0 = :s0, #s1 = :s1 REMOVE #r0");
        assert_eq!(update.names["#s0"], "attempts");
        assert_eq!(update.names["#s1"], "status");
        assert_eq!(update.names["#r0"], "leaseExpiresAt");
    }

    #[test]
    fn unchanged_pins_every_fingerprint_attribute_present_or_absent() {
        let before: Item = [("status", s("pending")), ("attempts", n(0))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let condition = unchanged(&before);
        assert_eq!(condition.names.len(), schema::FINGERPRINT.len());
        assert_eq!(condition.values.len(), 2);
        assert!(condition.text.contains("attribute_not_exists("));
    }
}
