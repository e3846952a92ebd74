//! Keeping a URL's password out of errors, for backends that connect with one.
//!
//! Drivers' errors rarely quote the URL, but a password can still surface in one (a parse
//! error, a server message): backends scrub the errors they make while connecting.

use crate::{StoreError, StoreErrorKind};

/// The secrets of one URL: its password (user info or `password=` parameter), as written
/// and percent-decoded.
#[derive(Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets in `url`.
    pub fn of(url: &str) -> Self {
        let mut secrets = Vec::new();
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        if let Some((_, password)) = user_info(rest).and_then(|info| info.split_once(':')) {
            secrets.push(password.to_owned());
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split('&') {
                if let Some(("password", value)) = pair.split_once('=') {
                    secrets.push(value.to_owned());
                }
            }
        }
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self(secrets)
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, mut text: String) -> String {
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// The same error of `backend`, its text scrubbed if it held a secret.
    pub fn scrub_error(&self, backend: &'static str, error: StoreError) -> StoreError {
        let text = error.to_string();
        if !self.0.iter().any(|secret| text.contains(secret.as_str())) {
            return error;
        }
        let text = self.scrub(text);
        match error.kind() {
            StoreErrorKind::Unavailable => StoreError::unavailable(backend, text),
            StoreErrorKind::Invalid => StoreError::Invalid(text),
            _ => StoreError::backend(backend, text),
        }
    }
}

/// The user info of a URL (what follows `scheme://`): everything before the last `@`.
///
/// Not the first `/`, `?` or `#`, as a URL parser would say: users paste passwords with
/// those characters unencoded, and a redaction that stopped at them would show the rest.
/// An `@` in a query makes more text count as user info, which only hides more.
fn user_info(rest: &str) -> Option<&str> {
    rest.rsplit_once('@').map(|(info, _)| info)
}

/// `url` with its password (user info or `password=` parameter) replaced by `***`, for
/// messages and logs. The user name and the rest stay readable.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: it may be anything, a password included.
        return "<unparsable URL>".to_owned();
    };
    let shown = match user_info(rest) {
        Some(info) => {
            let host = &rest[info.len() + 1..];
            match info.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{info}@{host}"),
            }
        }
        None => url.to_owned(),
    };
    Secrets::of(url).scrub(shown)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_scrubbed() {
        let secrets = Secrets::of("postgres://app:s%40cret@db:5432/omniq?sslmode=require");
        assert_eq!(
            secrets.scrub("saw s%40cret and s@cret".into()),
            "saw *** and ***"
        );
        let query = Secrets::of("postgres://db/omniq?user=app&password=hunter2");
        assert_eq!(query.scrub("x hunter2 y".into()), "x *** y");
        let none = Secrets::of("postgres://app@db/omniq");
        assert_eq!(none.scrub("app@db".into()), "app@db");
    }

    #[test]
    fn passwords_with_url_delimiters_never_show() {
        for password in ["p/ss", "p?ss", "p#ss", "p@ss", "p:ss", "a/b?c#d@e:f"] {
            for url in [
                format!("redis://:{password}@h:6379/0"),
                format!("postgres://app:{password}@db:5432/omniq?sslmode=require"),
                format!("mysql://root:{password}@127.0.0.1/test"),
            ] {
                let shown = redact(&url);
                assert!(!shown.contains(password), "{url} shown as {shown}");
                assert!(shown.contains(":***@"), "{shown}");
                let secrets = Secrets::of(&url);
                let scrubbed = secrets.scrub(format!("error for {url}: bad {password}"));
                assert!(!scrubbed.contains(password), "{scrubbed}");
            }
        }
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact("rediss://user:p%40ss@h/1?x=y"),
            "rediss://user:***@h/1?x=y"
        );
        assert_eq!(redact("redis://user@h"), "redis://user@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("secret"), "<unparsable URL>");
        assert_eq!(
            redact("postgres://db/omniq?user=app&password=hunter2"),
            "postgres://db/omniq?user=app&password=***"
        );
    }

    #[test]
    fn scrubbed_errors_keep_their_kind() {
        let secrets = Secrets::of("postgres://u:topsecret@h/db");
        let error = StoreError::unavailable("postgres", "refused by topsecret");
        let scrubbed = secrets.scrub_error("postgres", error);
        assert_eq!(scrubbed.kind(), StoreErrorKind::Unavailable);
        assert!(!scrubbed.to_string().contains("topsecret"));
    }
}
