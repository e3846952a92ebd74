//! The [`Settings`] struct and its small enums.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::builder::SettingsBuilder;
use crate::error::ConfigError;
use crate::url::StoreUrl;
pub use omniq_models::WorkerKind;
pub use omniq_serialization::Format;

/// Every OmniQ setting, with its default.
///
/// Build one with [`Settings::from_env`] or [`Settings::builder`], or start
/// from [`Settings::default`] / [`Settings::memory`] and set fields in code.
/// Each field's configuration key is its name; its environment variable is
/// the name upper-cased with an `OMNIQ_` prefix (`task_ttl` →
/// `OMNIQ_TASK_TTL`).
///
/// Serializing (e.g. to YAML) writes store URLs in full, secrets included;
/// [`Debug`](fmt::Debug) shows them redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Directory for embedded data such as the default SQLite file
    /// (`base_dir`, default `./.omniq`).
    pub base_dir: PathBuf,
    /// Where every store lives unless its own URL says otherwise (`url`,
    /// `OMNIQ_URL`); see [`Settings::store_url`].
    pub url: Option<StoreUrl>,
    /// Where task queues live (`task_queue_url`); unset means [`url`](Self::url), or
    /// else the embedded default, see [`Settings::store_url`].
    pub task_queue_url: Option<StoreUrl>,
    /// Where task results live (`result_storage_url`); unset means `url`, or else
    /// the task queue's.
    pub result_storage_url: Option<StoreUrl>,
    /// Where lifecycle events live (`event_storage_url`); unset means `url`, or else
    /// the task queue's.
    pub event_storage_url: Option<StoreUrl>,
    /// Where schedules live (`schedule_storage_url`); unset means `url`, or else the
    /// task queue's.
    pub schedule_storage_url: Option<StoreUrl>,
    /// Log filter, e.g. `info` or `omniq=debug,warn` (`log_level`, default
    /// `info`). OmniQ, a library, installs no logger: the application's subscriber reads
    /// this as its filter (`EnvFilter::try_new(&settings.log_level)`, as the quickstart
    /// does), so one setting sets it wherever OmniQ is configured.
    pub log_level: String,
    /// Worker used when none is chosen explicitly (`default_worker`: `async`, the
    /// default, `thread`, `local` or `process`).
    #[serde(deserialize_with = "values::deserialize_worker_kind")]
    pub default_worker: WorkerKind,
    /// How long an unfinished task is kept before it expires (`task_ttl`,
    /// default none: forever).
    #[serde(with = "crate::duration::serde_option_duration")]
    pub task_ttl: Option<Duration>,
    /// How long results are kept (`result_ttl`, default 7 days; `none` keeps
    /// them forever).
    #[serde(with = "crate::duration::serde_option_duration")]
    pub result_ttl: Option<Duration>,
    /// How long finished tasks stay in the task queue before workers delete them
    /// (`task_retention`, default 7 days; `none` keeps them).
    #[serde(with = "crate::duration::serde_option_duration")]
    pub task_retention: Option<Duration>,
    /// How long events are kept before workers delete them (`event_retention`, default
    /// 7 days; `none` keeps them).
    #[serde(with = "crate::duration::serde_option_duration")]
    pub event_retention: Option<Duration>,
    /// Attempts per task including the first (`max_attempts`, default 3;
    /// must be at least 1).
    pub max_attempts: u32,
    /// Per-attempt time limit (`timeout`, default none).
    #[serde(with = "crate::duration::serde_option_duration")]
    pub timeout: Option<Duration>,
    /// Largest accepted encoded payload in bytes (`max_payload_bytes`,
    /// default 1 MiB). Accepts `1048576`, `512KiB`, `1MiB`, `2MB`, ...
    #[serde(deserialize_with = "values::deserialize_byte_size")]
    pub max_payload_bytes: usize,
    /// Payload codec (`codec`: `msgpack`, the default, or `json`).
    #[serde(deserialize_with = "values::deserialize_codec")]
    pub codec: Format,
    /// Tasks a worker runs at once (`concurrency`, default 16; must be at
    /// least 1).
    pub concurrency: usize,
    /// Leases a worker claims ahead of free slots (`prefetch`, default: the same as
    /// `concurrency`; 0 for long tasks shared by many workers). A worker holds at most
    /// `concurrency + prefetch` leases.
    pub prefetch: Option<usize>,
    /// Queues a worker consumes, in priority order (`queues`, default
    /// `[default]`; in the environment or a map: `a,b` or `[a,b]`).
    #[serde(deserialize_with = "values::deserialize_list")]
    pub queues: Vec<String>,
    /// How long a claimed task stays leased without a heartbeat (`lease`,
    /// default 30s).
    #[serde(with = "crate::duration::serde_duration")]
    pub lease: Duration,
    /// How often workers renew their leases (`heartbeat`, default 10s; must
    /// be shorter than `lease`).
    #[serde(with = "crate::duration::serde_duration")]
    pub heartbeat: Duration,
    /// How long shutdown waits for running tasks (`shutdown_grace`, default
    /// 30s).
    #[serde(with = "crate::duration::serde_duration")]
    pub shutdown_grace: Duration,
    /// Polling interval used when no wake-up notification arrives
    /// (`poll_interval`, default 1s).
    #[serde(with = "crate::duration::serde_duration")]
    pub poll_interval: Duration,
    /// How long a due task whose name a worker has no handler for is left to other
    /// workers before that worker dead-letters it as `unknown_task` (`unknown_task_grace`,
    /// default 1h; `none`: never). Covers rolling deploys, where workers of the old
    /// release lack the new release's tasks.
    #[serde(with = "crate::duration::serde_option_duration")]
    pub unknown_task_grace: Option<Duration>,
    /// Whether workers also run the scheduler that fires stored schedules (`scheduler`,
    /// default true). Any number of workers may run it; each fire is enqueued once.
    pub scheduler: bool,
    /// Process workers replace a child after this many tasks (`max_tasks_per_child`,
    /// default none: never), to bound what a leaking handler can hold.
    pub max_tasks_per_child: Option<u32>,
    /// The program and arguments process workers start their children with
    /// (`child_command`, default empty: this program with its own arguments). Whatever it
    /// runs must start a process worker with the same tasks registered.
    #[serde(deserialize_with = "values::deserialize_list")]
    pub child_command: Vec<String>,
    /// Whether an enqueue stores the current span's OpenTelemetry context in the task's
    /// metadata (`traceparent`, `tracestate`), for the worker's span to continue
    /// (`trace_propagation`, default true). Only with the facades' `otel` feature; without
    /// it nothing is stored either way.
    pub trace_propagation: bool,
}

/// The configuration keys, in field order.
pub(crate) const KEYS: [&str; 28] = [
    "base_dir",
    "url",
    "task_queue_url",
    "result_storage_url",
    "event_storage_url",
    "schedule_storage_url",
    "log_level",
    "default_worker",
    "task_ttl",
    "result_ttl",
    "task_retention",
    "event_retention",
    "max_attempts",
    "timeout",
    "max_payload_bytes",
    "codec",
    "concurrency",
    "prefetch",
    "queues",
    "lease",
    "heartbeat",
    "shutdown_grace",
    "poll_interval",
    "unknown_task_grace",
    "scheduler",
    "max_tasks_per_child",
    "child_command",
    "trace_propagation",
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_dir: PathBuf::from("./.omniq"),
            url: None,
            task_queue_url: None,
            result_storage_url: None,
            event_storage_url: None,
            schedule_storage_url: None,
            log_level: "info".to_owned(),
            default_worker: WorkerKind::default(),
            task_ttl: None,
            result_ttl: Some(Duration::from_secs(7 * 24 * 3_600)),
            task_retention: Some(Duration::from_secs(7 * 24 * 3_600)),
            event_retention: Some(Duration::from_secs(7 * 24 * 3_600)),
            max_attempts: 3,
            timeout: None,
            max_payload_bytes: 1_048_576,
            codec: Format::default(),
            concurrency: 16,
            prefetch: None,
            queues: vec!["default".to_owned()],
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            unknown_task_grace: Some(Duration::from_secs(3_600)),
            scheduler: true,
            max_tasks_per_child: None,
            child_command: Vec::new(),
            trace_propagation: true,
        }
    }
}

impl Settings {
    /// Loads settings from the defaults, the YAML file named by
    /// `$OMNIQ_CONFIG` (if set) and the `OMNIQ_*` environment variables, then
    /// validates them.
    ///
    /// # Errors
    ///
    /// Any [`ConfigError`]: an unreadable config file, an invalid value, an
    /// unknown URL scheme, or a failed [`validate`](Self::validate).
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::builder().env().build()
    }

    /// Starts a [`SettingsBuilder`] for layering files, maps and the
    /// environment.
    pub fn builder() -> SettingsBuilder {
        SettingsBuilder::new()
    }

    /// Settings with all four stores in memory (`memory://`); handy for tests
    /// and examples.
    pub fn memory() -> Settings {
        let mut settings = Settings::default();
        for kind in StoreKind::ALL {
            *settings.store_url_mut(kind) = Some(StoreUrl::memory());
        }
        settings
    }

    /// The URL of the given store: its own when set; else [`url`](Self::url), the one
    /// for every store; else, for results, events and schedules, the task queue's, so
    /// that they live where the tasks do (a producer on another machine then finds the
    /// results its workers store); else [`default_store_url`](Self::default_store_url).
    pub fn store_url(&self, kind: StoreKind) -> StoreUrl {
        self.configured_store_url(kind)
            .or(self.url.as_ref())
            .or(match kind {
                StoreKind::TaskQueue => None,
                _ => self.task_queue_url.as_ref(),
            })
            .cloned()
            .unwrap_or_else(|| self.default_store_url())
    }

    /// The URL configured for `kind`, if any.
    pub fn configured_store_url(&self, kind: StoreKind) -> Option<&StoreUrl> {
        match kind {
            StoreKind::TaskQueue => self.task_queue_url.as_ref(),
            StoreKind::Results => self.result_storage_url.as_ref(),
            StoreKind::Events => self.event_storage_url.as_ref(),
            StoreKind::Schedules => self.schedule_storage_url.as_ref(),
        }
    }

    /// A mutable reference to the URL field for `kind`.
    pub fn store_url_mut(&mut self, kind: StoreKind) -> &mut Option<StoreUrl> {
        match kind {
            StoreKind::TaskQueue => &mut self.task_queue_url,
            StoreKind::Results => &mut self.result_storage_url,
            StoreKind::Events => &mut self.event_storage_url,
            StoreKind::Schedules => &mut self.schedule_storage_url,
        }
    }

    /// The embedded default shared by every unset store:
    /// `sqlite://<base_dir>/omniq.db`.
    pub fn default_store_url(&self) -> StoreUrl {
        StoreUrl::sqlite_file(&self.base_dir.join("omniq.db"))
    }

    /// Checks values that are well-formed but unusable.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidValue`] naming the key when `base_dir` or
    /// `log_level` is empty, `max_attempts`, `concurrency` or
    /// `max_payload_bytes` is 0, `queues` is empty or holds an empty name,
    /// `lease`, `poll_interval` or `timeout` is zero, or `heartbeat` is not
    /// shorter than `lease`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::invalid(key, message))
            }
        };
        check(
            !self.base_dir.as_os_str().is_empty(),
            "base_dir",
            "must not be empty",
        )?;
        check(
            !self.log_level.trim().is_empty(),
            "log_level",
            "must not be empty",
        )?;
        check(self.max_attempts > 0, "max_attempts", "must be at least 1")?;
        check(self.concurrency > 0, "concurrency", "must be at least 1")?;
        check(
            self.max_payload_bytes > 0,
            "max_payload_bytes",
            "must be at least 1",
        )?;
        check(
            !self.queues.is_empty(),
            "queues",
            "must list at least one queue",
        )?;
        check(
            self.queues.iter().all(|q| !q.trim().is_empty()),
            "queues",
            "queue names must not be empty",
        )?;
        check(!self.lease.is_zero(), "lease", "must be greater than zero")?;
        check(
            !self.poll_interval.is_zero(),
            "poll_interval",
            "must be greater than zero",
        )?;
        check(
            self.timeout.is_none_or(|t| !t.is_zero()),
            "timeout",
            "must be greater than zero (use `none` for no timeout)",
        )?;
        for kind in [StoreKind::Results, StoreKind::Events, StoreKind::Schedules] {
            let backend = self.store_url(kind).backend();
            if backend.holds_tasks_only() {
                return Err(ConfigError::invalid(
                    kind.key(),
                    format!(
                        "{backend} holds the task queue only: set `{}` to a store that keeps \
                         {kind} (postgres://, redis://, sqlite://, …); an unset store uses \
                         the task queue's URL",
                        kind.key()
                    ),
                ));
            }
        }
        if self.heartbeat >= self.lease {
            return Err(ConfigError::invalid(
                "heartbeat",
                format!(
                    "must be shorter than `lease` (heartbeat {} >= lease {})",
                    crate::duration::format_duration(self.heartbeat),
                    crate::duration::format_duration(self.lease),
                ),
            ));
        }
        Ok(())
    }
}

/// One of the four stores OmniQ keeps data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// Pending and running tasks.
    TaskQueue,
    /// Task results.
    Results,
    /// Lifecycle events.
    Events,
    /// Recurring and delayed schedules.
    Schedules,
}

impl StoreKind {
    /// All four stores.
    pub const ALL: [StoreKind; 4] = [
        StoreKind::TaskQueue,
        StoreKind::Results,
        StoreKind::Events,
        StoreKind::Schedules,
    ];

    /// The configuration key of this store's URL, e.g. `"task_queue_url"`.
    pub fn key(self) -> &'static str {
        match self {
            StoreKind::TaskQueue => "task_queue_url",
            StoreKind::Results => "result_storage_url",
            StoreKind::Events => "event_storage_url",
            StoreKind::Schedules => "schedule_storage_url",
        }
    }

    /// The environment variable of this store's URL, e.g.
    /// `"OMNIQ_TASK_QUEUE_URL"`.
    pub fn env_key(self) -> &'static str {
        match self {
            StoreKind::TaskQueue => "OMNIQ_TASK_QUEUE_URL",
            StoreKind::Results => "OMNIQ_RESULT_STORAGE_URL",
            StoreKind::Events => "OMNIQ_EVENT_STORAGE_URL",
            StoreKind::Schedules => "OMNIQ_SCHEDULE_STORAGE_URL",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::TaskQueue => "task queue",
            StoreKind::Results => "results",
            StoreKind::Events => "events",
            StoreKind::Schedules => "schedules",
        })
    }
}

/// Lenient deserializers for values that may arrive as strings.
mod values {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, SeqAccess, Visitor};

    use super::{Format, WorkerKind};
    use crate::error::ConfigError;

    /// A worker kind, its error naming the key.
    pub(super) fn deserialize_worker_kind<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<WorkerKind, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        s.parse().map_err(|e: omniq_models::UnknownWorkerKind| {
            de::Error::custom(ConfigError::invalid("default_worker", e.to_string()).detail())
        })
    }

    /// A payload format, its error naming the key.
    pub(super) fn deserialize_codec<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Format, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        s.parse().map_err(|e: omniq_serialization::UnknownFormat| {
            de::Error::custom(ConfigError::invalid("codec", e.to_string()).detail())
        })
    }

    /// A list of strings, or one comma-separated string (`"a, b"`).
    pub(super) fn deserialize_list<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of names or a comma-separated string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
                let v = v.trim();
                let v = v
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .unwrap_or(v);
                Ok(v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item.trim().to_owned());
                }
                Ok(out)
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }

    /// A byte count: an integer, or a string such as `"512KiB"` or `"2MB"`.
    pub(super) fn deserialize_byte_size<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<usize, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes such as `1048576` or `1MiB`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom("size is too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
                parse_byte_size(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }

    pub(super) fn parse_byte_size(input: &str) -> Result<usize, String> {
        let s = input.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(format!("expected a size in bytes, found `{s}`"));
        }
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(format!("unknown size unit `{}`", unit.trim())),
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| "size is too large".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_fields() -> Result<(), Box<dyn std::error::Error>> {
        let value = figment::value::Value::serialize(Settings::default())?;
        let dict = value.into_dict().unwrap_or_default();
        let mut fields: Vec<&str> = dict.keys().map(String::as_str).collect();
        let mut keys = KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
        for kind in StoreKind::ALL {
            assert!(KEYS.contains(&kind.key()));
            assert_eq!(
                kind.env_key(),
                format!("OMNIQ_{}", kind.key().to_uppercase())
            );
        }
        Ok(())
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(values::parse_byte_size("1048576"), Ok(1_048_576));
        assert_eq!(values::parse_byte_size("1MiB"), Ok(1_048_576));
        assert_eq!(values::parse_byte_size("512 KiB"), Ok(524_288));
        assert_eq!(values::parse_byte_size("2MB"), Ok(2_000_000));
        assert!(values::parse_byte_size("1 parsec").is_err());
        assert!(values::parse_byte_size("-1").is_err());
        assert!(values::parse_byte_size("").is_err());
    }

    #[test]
    fn enums_parse_case_insensitively() {
        assert_eq!(
            "Thread".parse::<WorkerKind>().ok(),
            Some(WorkerKind::Thread)
        );
        assert_eq!("JSON".parse::<Format>().ok(), Some(Format::Json));
        assert!("fork".parse::<WorkerKind>().is_err());
        assert_eq!(Format::MessagePack.to_string(), "msgpack");
    }

    #[test]
    fn validate_names_keys() {
        let bad = |f: fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().err().and_then(|e| e.key().map(str::to_owned))
        };
        assert_eq!(bad(|s| s.max_attempts = 0).as_deref(), Some("max_attempts"));
        assert_eq!(bad(|s| s.concurrency = 0).as_deref(), Some("concurrency"));
        assert_eq!(bad(|s| s.queues.clear()).as_deref(), Some("queues"));
        assert_eq!(
            bad(|s| s.queues = vec![" ".into()]).as_deref(),
            Some("queues")
        );
        assert_eq!(bad(|s| s.heartbeat = s.lease).as_deref(), Some("heartbeat"));
        assert_eq!(bad(|s| s.lease = Duration::ZERO).as_deref(), Some("lease"));
        assert_eq!(
            bad(|s| s.timeout = Some(Duration::ZERO)).as_deref(),
            Some("timeout")
        );
        assert_eq!(bad(|s| s.log_level.clear()).as_deref(), Some("log_level"));
        assert_eq!(bad(|_| ()), None);
        assert_eq!(Settings::memory().validate(), Ok(()));
    }
}
