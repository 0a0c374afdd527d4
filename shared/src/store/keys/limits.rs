//! Limits per key, as an operator configures them (`TASKER_KEY_LIMITS`): rules that give the
//! tasks of a type, or the keys with a prefix, a concurrency limit, a rate, or both.

use std::time::Duration;

use serde::Deserialize;

/// Starts allowed per period: one start every `period / starts`, with bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts per period.
    pub starts: u32,
    /// The period.
    pub period: Duration,
    /// Starts allowed back to back after a quiet spell (at least 1).
    pub burst: u32,
}

impl Rate {
    /// The time one start uses up.
    pub fn interval(&self) -> Duration {
        self.period / self.starts.max(1)
    }

    /// How far ahead of now a key's next start may be booked and a task still start now.
    pub fn tolerance(&self) -> Duration {
        self.interval() * self.burst.max(1).saturating_sub(1)
    }
}

/// One rule as written: which tasks it covers and their limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleText {
    #[serde(rename = "type")]
    task_type: Option<String>,
    key_prefix: Option<String>,
    concurrency: Option<u32>,
    rate: Option<String>,
    burst: Option<u32>,
    #[serde(default)]
    keys_from_host: bool,
}

/// Which tasks a rule covers and its limits, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    /// Tasks of this type only, when given.
    pub task_type: Option<String>,
    /// Keys starting with this only, when given.
    pub key_prefix: Option<String>,
    /// Most tasks of one `concurrencyKey` running at once.
    pub concurrency: Option<u32>,
    /// Starts of one `rateKey`.
    pub rate: Option<Rate>,
    /// Tasks of the rule's type created without keys get their payload `url`'s host as both
    /// keys (`sendWebhook`: limits per receiving host).
    pub keys_from_host: bool,
}

impl KeyRule {
    fn covers(&self, task_type: &str, key: &str) -> bool {
        self.task_type.as_deref().is_none_or(|t| t == task_type)
            && self
                .key_prefix
                .as_deref()
                .is_none_or(|p| key.starts_with(p))
    }
}

/// Every rule, in the order written: for each kind of limit, the first rule that covers a
/// task's type and key and sets that kind applies (so specific rules go first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    rules: Vec<KeyRule>,
}

/// A rule set that cannot be used; the message names the rule and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TASKER_KEY_LIMITS: {0}")]
pub struct InvalidKeyLimits(String);

impl KeyLimits {
    /// No rules.
    pub const fn none() -> Self {
        Self { rules: Vec::new() }
    }

    /// The rules, checked.
    pub fn new(rules: Vec<KeyRule>) -> Result<Self, InvalidKeyLimits> {
        for (index, rule) in rules.iter().enumerate() {
            let at = |what: &str| InvalidKeyLimits(format!("rule {index}: {what}"));
            if rule.task_type.is_none() && rule.key_prefix.is_none() {
                return Err(at("give `type`, `keyPrefix` or both"));
            }
            if rule.concurrency.is_none() && rule.rate.is_none() && !rule.keys_from_host {
                return Err(at("give `concurrency`, `rate` or both"));
            }
            if rule.keys_from_host && rule.task_type.is_none() {
                return Err(at(
                    "`keysFromHost` needs the `type` whose tasks get the keys",
                ));
            }
            if rule.concurrency == Some(0) {
                return Err(at(
                    "`concurrency` must be at least 1 (pause the type instead)",
                ));
            }
        }
        Ok(Self { rules })
    }

    /// The rules of `text`, a JSON array such as
    /// `[{"type": "sendWebhook", "concurrency": 2, "rate": "5/1s", "burst": 1}]`.
    pub fn parse(text: &str) -> Result<Self, InvalidKeyLimits> {
        let written: Vec<RuleText> = serde_json::from_str(text)
            .map_err(|err| InvalidKeyLimits(format!("not a JSON array of rules: {err}")))?;
        let mut rules = Vec::with_capacity(written.len());
        for (index, rule) in written.into_iter().enumerate() {
            let at = |what: String| InvalidKeyLimits(format!("rule {index}: {what}"));
            let rate = rule
                .rate
                .as_deref()
                .map(|text| parse_rate(text, rule.burst.unwrap_or(1)).map_err(at))
                .transpose()?;
            if rule.burst == Some(0) {
                return Err(InvalidKeyLimits(format!(
                    "rule {index}: `burst` must be at least 1"
                )));
            }
            rules.push(KeyRule {
                task_type: rule.task_type,
                key_prefix: rule.key_prefix,
                concurrency: rule.concurrency,
                rate,
                keys_from_host: rule.keys_from_host,
            });
        }
        Self::new(rules)
    }

    /// True when no rule is set: keys limit nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when tasks of `task_type` created without keys get their target host as both.
    pub fn keys_from_host(&self, task_type: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.keys_from_host && rule.task_type.as_deref() == Some(task_type))
    }

    /// True when a limit covers one of `task`'s keys: a claim may hold it.
    pub fn limit_any(&self, task: &crate::task::Task) -> bool {
        let concurrency = task.concurrency_key.as_deref();
        let rate = task.rate_key.as_deref();
        concurrency.is_some_and(|key| self.concurrency(&task.task_type, key).is_some())
            || rate.is_some_and(|key| self.rate(&task.task_type, key).is_some())
    }

    /// The concurrency limit of a task of `task_type` with the concurrency key `key`.
    pub fn concurrency(&self, task_type: &str, key: &str) -> Option<u32> {
        self.rules
            .iter()
            .filter(|rule| rule.covers(task_type, key))
            .find_map(|rule| rule.concurrency)
    }

    /// The rate of a task of `task_type` with the rate key `key`.
    pub fn rate(&self, task_type: &str, key: &str) -> Option<Rate> {
        self.rules
            .iter()
            .filter(|rule| rule.covers(task_type, key))
            .find_map(|rule| rule.rate)
    }
}

/// `N/PERIOD`: `5/s`, `5/1s`, `100/1m`, `1000/1h 30m`.
fn parse_rate(text: &str, burst: u32) -> Result<Rate, String> {
    let bad = || format!("`rate` {text:?} is not N/PERIOD (such as \"5/1s\" or \"100/1m\")");
    let (starts, period) = text.split_once('/').ok_or_else(bad)?;
    let starts: u32 = starts.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        humantime::parse_duration(period)
    } else {
        humantime::parse_duration(&format!("1{period}"))
    }
    .map_err(|_| bad())?;
    if starts == 0 || period.is_zero() {
        return Err(format!(
            "`rate` {text:?} must allow at least one start per period"
        ));
    }
    Ok(Rate {
        starts,
        period,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_rule_that_covers_a_task_and_sets_a_kind_applies() {
        let limits = KeyLimits::parse(
            r#"[{"keyPrefix": "vip:", "type": "hook", "rate": "100/1m"},
                {"type": "hook", "concurrency": 2, "rate": "5/s", "burst": 3}]"#,
        )
        .expect("valid");
        assert_eq!(limits.concurrency("hook", "vip:a"), Some(2));
        let vip = limits.rate("hook", "vip:a").expect("rate");
        assert_eq!(
            (vip.interval(), vip.tolerance()),
            (Duration::from_millis(600), Duration::ZERO)
        );
        let plain = limits.rate("hook", "a").expect("rate");
        assert_eq!(
            (plain.interval(), plain.tolerance()),
            (Duration::from_millis(200), Duration::from_millis(400))
        );
        assert_eq!(limits.concurrency("other", "a"), None);
    }

    #[test]
    fn a_bad_rule_is_named() {
        for (text, says) in [
            (r#"[{"concurrency": 2}]"#, "rule 0: give `type`"),
            (r#"[{"type": "t"}]"#, "rule 0: give `concurrency`"),
            (r#"[{"type": "t", "rate": "5"}]"#, "rule 0: `rate` \"5\""),
            (r#"[{"type": "t", "rate": "0/s"}]"#, "at least one start"),
            (r#"[{"type": "t", "concurrency": 0}]"#, "at least 1"),
            (r#"[{"type": "t", "rate": "1/s", "burst": 0}]"#, "`burst`"),
            (r#"[{"type": "t", "concurency": 1}]"#, "unknown field"),
            (
                r#"[{"keyPrefix": "h", "keysFromHost": true, "rate": "1/s"}]"#,
                "`keysFromHost`",
            ),
            (r#"{"type": "t"}"#, "JSON array"),
        ] {
            let err = KeyLimits::parse(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
