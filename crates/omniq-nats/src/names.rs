//! Stream, bucket and subject names, derived from the backend's prefix.

use omniq_storage::{StoreError, StoreResult};

/// The names of every stream and bucket a backend uses, derived from its prefix, so that
/// several applications share one server without seeing each other.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`, which must be a valid stream name and subject token: ASCII
    /// letters, digits, `_` and `-`.
    pub(crate) fn new(prefix: &str) -> StoreResult<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(StoreError::Invalid(format!(
                "the NATS prefix `{prefix}` must be 1 to 64 ASCII letters, digits, `_` or `-` \
                 (it names streams, buckets and subjects)"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix as given.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key-value bucket of tasks.
    pub(crate) fn tasks_bucket(&self) -> String {
        format!("{}_tasks", self.prefix)
    }

    /// The key-value bucket of results.
    pub(crate) fn results_bucket(&self) -> String {
        format!("{}_results", self.prefix)
    }

    /// The key-value bucket of schedules.
    pub(crate) fn schedules_bucket(&self) -> String {
        format!("{}_schedules", self.prefix)
    }

    /// The stream of events.
    pub(crate) fn events_stream(&self) -> String {
        format!("{}_events", self.prefix)
    }

    /// Every event subject: `{prefix}.events.{queue}.{task}`.
    pub(crate) fn events_subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The subject of an event of `queue` and `task` (either may be absent), and the filter
    /// of a query by them (absent = any).
    pub(crate) fn event_subject(&self, queue: Option<&str>, task: Option<&str>) -> String {
        format!(
            "{}.events.{}.{}",
            self.prefix,
            queue.map_or_else(|| NONE.to_owned(), token),
            task.map_or_else(|| NONE.to_owned(), token),
        )
    }

    /// The filter matching the events of `queue` and `task`, where `None` matches any.
    pub(crate) fn event_filter(&self, queue: Option<&str>, task: Option<&str>) -> String {
        match (queue, task) {
            (None, None) => self.events_subjects(),
            _ => format!(
                "{}.events.{}.{}",
                self.prefix,
                queue.map_or_else(|| "*".to_owned(), token),
                task.map_or_else(|| "*".to_owned(), token),
            ),
        }
    }
}

/// The token of an absent queue or task in an event subject. Not the output of [`token`]
/// for any text: an `=` there is always followed by two hex digits.
const NONE: &str = "=n";

/// Text made safe as one subject token and one key-value key: ASCII letters, digits, `_`
/// and `-` stay; every other byte becomes `=` and two hex digits; the empty text becomes a
/// lone `=`. Reversible ([`untoken`]) and never empty, so names with dots, spaces, `*` or
/// `>` never split or widen a subject.
pub(crate) fn token(text: &str) -> String {
    if text.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push('=');
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out
}

/// The text a [`token`] came from; `None` when it is not one (the tests prove tokens
/// reversible with it).
#[cfg(test)]
pub(crate) fn untoken(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_split_a_subject() {
        for text in ["", "plain", "a.b", "x y", "*", ">", "=", "=n", "é", "a-b_c"] {
            let t = token(text);
            assert!(!t.is_empty());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'='),
                "{t}"
            );
            assert_ne!(t, NONE);
            assert_eq!(untoken(&t).as_deref(), Some(text));
        }
    }

    #[test]
    fn prefixes_that_cannot_name_a_stream_are_refused() {
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b"] {
            assert!(Names::new(bad).is_err(), "{bad}");
        }
        assert!(Names::new("omniq-test_1").is_ok());
    }
}
