//! Store URLs: a connection string whose scheme picks the storage backend.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ConfigError;

/// The storage backend selected by a [`StoreUrl`]'s scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// In-process memory (`memory://`).
    Memory,
    /// Embedded SQLite file (`sqlite://`).
    Sqlite,
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// MySQL or MariaDB (`mysql://`, `mariadb://`).
    Mysql,
    /// Redis (`redis://`, `rediss://` for TLS).
    Redis,
    /// NATS with JetStream (`nats://`, `tls://` for TLS).
    Nats,
    /// Objects in a local directory (`file://`), or object_store's in-memory store
    /// (`file+memory://`).
    File,
    /// Amazon S3 (`s3://`).
    S3,
    /// Azure Blob Storage (`az://`, `azure://`).
    Azure,
    /// Google Cloud Storage (`gs://`, `gcs://`).
    Gcs,
    /// AMQP brokers such as RabbitMQ (`amqp://`, `amqps://`).
    Amqp,
    /// Amazon SQS (`sqs://`).
    Sqs,
}

impl Backend {
    /// Every backend, in declaration order.
    pub const ALL: [Backend; 12] = [
        Backend::Memory,
        Backend::Sqlite,
        Backend::Postgres,
        Backend::Mysql,
        Backend::Redis,
        Backend::Nats,
        Backend::File,
        Backend::S3,
        Backend::Azure,
        Backend::Gcs,
        Backend::Amqp,
        Backend::Sqs,
    ];

    /// The backend's lower-case name, e.g. `"postgres"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Redis => "redis",
            Backend::Nats => "nats",
            Backend::File => "file",
            Backend::S3 => "s3",
            Backend::Azure => "azure",
            Backend::Gcs => "gcs",
            Backend::Amqp => "amqp",
            Backend::Sqs => "sqs",
        }
    }

    /// Whether OmniQ has this backend (behind the cargo feature of the same name); the
    /// others have a scheme reserved and are refused as not implemented yet.
    pub fn is_implemented(self) -> bool {
        matches!(
            self,
            Backend::Memory
                | Backend::Sqlite
                | Backend::Postgres
                | Backend::Mysql
                | Backend::Redis
                | Backend::Nats
                | Backend::File
                | Backend::S3
                | Backend::Azure
                | Backend::Gcs
                | Backend::Amqp
                | Backend::Sqs
        )
    }

    /// Whether this backend is a broker that holds the task queue only: results, events
    /// and schedules must then live in another store.
    pub fn holds_tasks_only(self) -> bool {
        matches!(self, Backend::Amqp | Backend::Sqs)
    }

    /// The cargo feature of omniq / omniq-async that includes this backend: its name,
    /// but `file` for every object store (a directory, S3, Azure, GCS).
    pub fn feature(self) -> &'static str {
        match self {
            Backend::File | Backend::S3 | Backend::Azure | Backend::Gcs => "file",
            other => other.name(),
        }
    }

    /// The backend for a URL scheme (case-insensitive), if any.
    pub fn from_scheme(scheme: &str) -> Option<Backend> {
        let backend = match scheme.to_ascii_lowercase().as_str() {
            "memory" => Backend::Memory,
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            "mysql" | "mariadb" => Backend::Mysql,
            "redis" | "rediss" => Backend::Redis,
            "nats" | "tls" => Backend::Nats,
            "file" | "file+memory" => Backend::File,
            "s3" | "s3a" => Backend::S3,
            "az" | "azure" => Backend::Azure,
            "gs" | "gcs" => Backend::Gcs,
            "amqp" | "amqps" => Backend::Amqp,
            "sqs" => Backend::Sqs,
            _ => return None,
        };
        Some(backend)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed store URL, such as `postgres://user:secret@db/omniq` or
/// `sqlite://./.omniq/omniq.db`.
///
/// The scheme (text before the first `:`) chooses the [`Backend`]; the rest is
/// kept verbatim for the backend to interpret. [`as_str`](Self::as_str) gives
/// the full URL for connecting, while [`Display`](fmt::Display),
/// [`Debug`](fmt::Debug) and every error show the [redacted](Self::redacted)
/// form, so secrets never reach logs.
///
/// Serializing a `StoreUrl` writes the full URL, secrets included.
///
/// ```
/// use omniq_config::{Backend, StoreUrl};
///
/// let url = StoreUrl::parse("postgres://app:hunter2@db:5432/omniq")?;
/// assert_eq!(url.backend(), Backend::Postgres);
/// assert_eq!(url.as_str(), "postgres://app:hunter2@db:5432/omniq");
/// assert_eq!(url.to_string(), "postgres://app:***@db:5432/omniq");
/// # Ok::<(), omniq_config::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreUrl {
    raw: String,
    backend: Backend,
    /// Byte length of the scheme.
    scheme_len: usize,
    /// Byte ranges of `raw` to hide in the redacted form.
    secrets: Vec<Range<usize>>,
}

impl StoreUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownScheme`] when the scheme names no known backend,
    /// [`ConfigError::InvalidUrl`] when the input is empty or has no scheme.
    /// Neither error contains the URL itself.
    pub fn parse(s: &str) -> Result<StoreUrl, ConfigError> {
        let raw = s.trim();
        if raw.is_empty() {
            return Err(invalid_url("empty URL"));
        }
        let scheme = match raw.split_once(':') {
            Some((scheme, _)) if is_scheme(scheme) => scheme,
            _ => {
                return Err(invalid_url(
                    "missing URL scheme (expected e.g. `sqlite://path/to/omniq.db` or `memory://`)",
                ));
            }
        };
        let backend = Backend::from_scheme(scheme).ok_or_else(|| ConfigError::UnknownScheme {
            key: None,
            scheme: scheme.to_owned(),
        })?;
        let secrets = find_secrets(raw, scheme.len(), backend);
        Ok(StoreUrl {
            raw: raw.to_owned(),
            backend,
            scheme_len: scheme.len(),
            secrets,
        })
    }

    /// The backend chosen by the scheme.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The scheme as written, e.g. `"rediss"`.
    pub fn scheme(&self) -> &str {
        &self.raw[..self.scheme_len]
    }

    /// The full URL, secrets included. Use it to connect; never log it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URL with its password, and any query parameter whose name looks
    /// secret (`password`, `secret`, `token`, `key`, `sig`, ...), replaced by
    /// `***`.
    pub fn redacted(&self) -> String {
        let mut out = String::with_capacity(self.raw.len());
        let mut last = 0;
        for range in &self.secrets {
            out.push_str(&self.raw[last..range.start]);
            out.push_str("***");
            last = range.end;
        }
        out.push_str(&self.raw[last..]);
        out
    }

    /// The database file of a SQLite URL; `None` for in-memory databases and
    /// for other backends.
    ///
    /// Accepted forms: `sqlite://./x.db` → `./x.db`, `sqlite:///abs/x.db` →
    /// `/abs/x.db`, `sqlite:x.db` → `x.db`. Query parameters (`?mode=rwc`) are
    /// dropped and `%XX` escapes decoded. `sqlite::memory:`,
    /// `sqlite://:memory:` and an empty path give `None`.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let rest = &self.raw[self.scheme_len + 1..];
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split(['?', '#']).next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        Some(PathBuf::from(percent_decode(path)))
    }

    /// A `sqlite://` URL for the database file at `path`, escaping `%`, `?`
    /// and `#` so that [`sqlite_path`](Self::sqlite_path) returns `path`.
    pub fn sqlite_file(path: &std::path::Path) -> StoreUrl {
        let mut url = String::from("sqlite://");
        for c in path.to_string_lossy().chars() {
            match c {
                '%' => url.push_str("%25"),
                '?' => url.push_str("%3F"),
                '#' => url.push_str("%23"),
                c => url.push(c),
            }
        }
        StoreUrl {
            raw: url,
            backend: Backend::Sqlite,
            scheme_len: "sqlite".len(),
            secrets: Vec::new(),
        }
    }

    /// The `memory://` URL.
    pub fn memory() -> StoreUrl {
        StoreUrl {
            raw: "memory://".to_owned(),
            backend: Backend::Memory,
            scheme_len: "memory".len(),
            secrets: Vec::new(),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreUrl").field(&self.redacted()).finish()
    }
}

impl FromStr for StoreUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}

impl serde::Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StoreUrl;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a store URL such as `sqlite://./omniq.db`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StoreUrl, E> {
                StoreUrl::parse(v).map_err(|e| E::custom(e.detail()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn invalid_url(message: &str) -> ConfigError {
    ConfigError::InvalidUrl {
        key: None,
        message: message.to_owned(),
    }
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Whether a query parameter with this name probably holds a secret.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "key",
        "sig",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The password range within `rest` (the text after `scheme://`).
///
/// Passwords should be percent-encoded, but a raw `/` in one is a common
/// mistake, so when the authority proper has no `@` the search extends up to
/// the query; over-redacting is harmless, leaking is not.
fn userinfo_secret(rest: &str, backend: Backend) -> Option<Range<usize>> {
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_len].rfind('@') {
        let userinfo = &rest[..at];
        return match userinfo.find(':') {
            Some(colon) if colon + 1 < at => Some(colon + 1..at),
            Some(_) => None,
            // NATS uses a bare `token@host` for token authentication.
            None if backend == Backend::Nats && at > 0 => Some(0..at),
            None => None,
        };
    }
    let loose_len = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..loose_len].rfind('@')?;
    let colon = rest[..at].find(':')?;
    (colon + 1 < at).then_some(colon + 1..at)
}

/// Byte ranges (sorted, disjoint) of `raw` that hold secrets.
fn find_secrets(raw: &str, scheme_len: usize, backend: Backend) -> Vec<Range<usize>> {
    let mut secrets = Vec::new();
    let after_scheme = scheme_len + 1;

    // userinfo: `scheme://user:password@host`
    if raw[after_scheme..].starts_with("//") {
        let start = after_scheme + 2;
        if let Some(range) = userinfo_secret(&raw[start..], backend) {
            secrets.push(start + range.start..start + range.end);
        }
    }

    // query: `?password=...&token=...`
    if let Some(q) = raw.find('?') {
        let query_start = q + 1;
        let query_end = raw[query_start..]
            .find('#')
            .map_or(raw.len(), |i| query_start + i);
        let mut pos = query_start;
        for pair in raw[query_start..query_end].split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && !value.is_empty()
                && is_secret_param(name)
            {
                let value_start = pos + name.len() + 1;
                secrets.push(value_start..value_start + value.len());
            }
            pos += pair.len() + 1;
        }
    }
    secrets
}

/// Decodes `%XX` escapes; malformed escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces URL passwords found anywhere in `text` by `***`.
///
/// Used to scrub messages from third-party parsers, which may echo a value.
pub(crate) fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(idx) = rest.find("://") {
        let start = idx + 3;
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(rest.len());
        if let Some(range) = userinfo_secret(&rest[..end], Backend::Memory) {
            out.push_str(&rest[..range.start]);
            out.push_str("***");
            rest = &rest[range.end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> StoreUrl {
        StoreUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn schemes_pick_backends() {
        for (s, b) in [
            ("memory://", Backend::Memory),
            ("sqlite::memory:", Backend::Sqlite),
            ("postgres://h/db", Backend::Postgres),
            ("postgresql://h/db", Backend::Postgres),
            ("mysql://h/db", Backend::Mysql),
            ("mariadb://h/db", Backend::Mysql),
            ("redis://h", Backend::Redis),
            ("rediss://h", Backend::Redis),
            ("nats://h", Backend::Nats),
            ("tls://h:4222", Backend::Nats),
            ("file:///tmp/q", Backend::File),
            ("s3://bucket/prefix", Backend::S3),
            ("az://container", Backend::Azure),
            ("azure://container", Backend::Azure),
            ("gs://bucket", Backend::Gcs),
            ("gcs://bucket", Backend::Gcs),
            ("amqp://h", Backend::Amqp),
            ("amqps://h", Backend::Amqp),
            ("sqs://queue", Backend::Sqs),
            ("POSTGRES://h", Backend::Postgres),
        ] {
            assert_eq!(url(s).backend(), b, "{s}");
        }
        assert_eq!(Backend::Postgres.to_string(), "postgres");
        assert_eq!(url("rediss://h").scheme(), "rediss");
    }

    #[test]
    fn bad_urls() {
        assert_eq!(
            StoreUrl::parse("foo://x"),
            Err(ConfigError::UnknownScheme {
                key: None,
                scheme: "foo".into()
            })
        );
        for bad in ["", "   ", "no-scheme-here", "://x", "1abc://x", "p@ss:word"] {
            assert!(
                matches!(StoreUrl::parse(bad), Err(ConfigError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn redaction() {
        let u = url("postgres://app:hunter2@db:5432/omniq?sslmode=require");
        assert_eq!(
            u.as_str(),
            "postgres://app:hunter2@db:5432/omniq?sslmode=require"
        );
        assert_eq!(
            u.redacted(),
            "postgres://app:***@db:5432/omniq?sslmode=require"
        );
        assert_eq!(u.to_string(), u.redacted());
        assert!(!format!("{u:?}").contains("hunter2"));

        assert_eq!(
            url("redis://:pw@h:6379/0").redacted(),
            "redis://:***@h:6379/0"
        );
        assert_eq!(url("redis://user@h").redacted(), "redis://user@h");
        assert_eq!(url("nats://tok@h").redacted(), "nats://***@h");
        assert_eq!(
            url("amqp://u:p@ss@h/vhost").redacted(),
            "amqp://u:***@h/vhost"
        );
        assert_eq!(
            url("s3://bucket/p?region=eu&secret_access_key=abc&token=t#frag").redacted(),
            "s3://bucket/p?region=eu&secret_access_key=***&token=***#frag"
        );
        assert_eq!(url("az://c?sig=xyz&sv=1").redacted(), "az://c?sig=***&sv=1");
        assert_eq!(
            url("postgres://h/db?password=").redacted(),
            "postgres://h/db?password="
        );
        assert_eq!(
            url("postgres://u:a/b@h/db").redacted(),
            "postgres://u:***@h/db"
        );
        assert_eq!(url("s3://bucket/a@b").redacted(), "s3://bucket/a@b");
    }

    #[test]
    fn sqlite_paths() {
        let p = |s: &str| url(s).sqlite_path();
        assert_eq!(p("sqlite://./x.db"), Some(PathBuf::from("./x.db")));
        assert_eq!(p("sqlite:///abs/x.db"), Some(PathBuf::from("/abs/x.db")));
        assert_eq!(p("sqlite:x.db?mode=rwc"), Some(PathBuf::from("x.db")));
        assert_eq!(p("sqlite://a%20b%3F.db"), Some(PathBuf::from("a b?.db")));
        assert_eq!(p("sqlite::memory:"), None);
        assert_eq!(p("sqlite://:memory:"), None);
        assert_eq!(p("sqlite://"), None);
        assert_eq!(p("memory://"), None);

        let weird = std::path::Path::new("/tmp/a%b?c#d/omniq.db");
        assert_eq!(
            StoreUrl::sqlite_file(weird).sqlite_path().as_deref(),
            Some(weird)
        );
        assert_eq!(
            StoreUrl::sqlite_file(weird),
            url(StoreUrl::sqlite_file(weird).as_str())
        );
    }

    #[test]
    fn text_redaction() {
        assert_eq!(
            redact_text(r#"found string "postgres://u:pw@h/db", expected u32"#),
            r#"found string "postgres://u:***@h/db", expected u32"#
        );
        assert_eq!(redact_text("no urls"), "no urls");
        assert_eq!(redact_text("a://h b://u:p@h"), "a://h b://u:***@h");
    }
}
