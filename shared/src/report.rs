//! An error with its whole chain of sources on one line, for logs and the Lambda edge.

use std::error::Error;
use std::fmt;

/// Shows `error: source: source of source…`. Errors keep their cause as a source rather
/// than in their own message, so a log line that printed only the top would lose it.
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut shown = self.0.to_string();
        let mut next = self.0.source();
        while let Some(source) = next {
            let text = source.to_string();
            // Some errors repeat their source's message in their own (the SDK's service
            // errors do); print each piece of text once.
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = source.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_source_is_shown_once() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(Report(&err).to_string(), "outer: inner");
    }
}
