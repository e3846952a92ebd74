//! Loading, precedence, parsing and redaction of OmniQ settings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use omniq_config::{Backend, ConfigError, Format, Settings, StoreKind, StoreUrl, WorkerKind};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn yaml_file(contents: &str) -> Result<tempfile::NamedTempFile, std::io::Error> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    file.write_all(contents.as_bytes())?;
    file.flush()?;
    Ok(file)
}

fn build_err(builder: omniq_config::SettingsBuilder) -> ConfigError {
    match builder.build() {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults() -> TestResult {
    let s = Settings::builder().build()?;
    assert_eq!(s, Settings::default());
    assert_eq!(s.base_dir, PathBuf::from("./.omniq"));
    assert_eq!(s.task_queue_url, None);
    assert_eq!(s.log_level, "info");
    assert_eq!(s.default_worker, WorkerKind::Async);
    assert_eq!(s.task_ttl, None);
    assert_eq!(s.result_ttl, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(s.max_attempts, 3);
    assert_eq!(s.timeout, None);
    assert_eq!(s.max_payload_bytes, 1_048_576);
    assert_eq!(s.codec, Format::MessagePack);
    assert_eq!(s.concurrency, 16);
    assert_eq!(s.queues, ["default"]);
    assert_eq!(s.lease, Duration::from_secs(30));
    assert_eq!(s.heartbeat, Duration::from_secs(10));
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    assert_eq!(s.poll_interval, Duration::from_secs(1));
    s.validate()?;
    Ok(())
}

#[test]
fn nothing_set_means_one_sqlite_file_under_base_dir() -> TestResult {
    let s = Settings::builder().env_from(Vec::new()).build()?;
    for kind in StoreKind::ALL {
        let url = s.store_url(kind);
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(url.as_str(), "sqlite://./.omniq/omniq.db");
        assert_eq!(url.sqlite_path(), Some(PathBuf::from("./.omniq/omniq.db")));
    }

    let s = Settings::builder()
        .env_from(env(&[("OMNIQ_BASE_DIR", "/var/lib/omniq")]))
        .build()?;
    let url = s.store_url(StoreKind::Events);
    assert_eq!(url.as_str(), "sqlite:///var/lib/omniq/omniq.db");
    assert_eq!(
        url.sqlite_path(),
        Some(PathBuf::from("/var/lib/omniq/omniq.db"))
    );
    Ok(())
}

#[test]
fn omniq_url_sets_every_store_and_per_store_urls_override_it() -> TestResult {
    let s = Settings::builder()
        .env_from(env(&[
            ("OMNIQ_URL", "postgres://u@db/omniq"),
            ("OMNIQ_EVENT_STORAGE_URL", "memory://"),
        ]))
        .build()?;
    for kind in [
        StoreKind::TaskQueue,
        StoreKind::Results,
        StoreKind::Schedules,
    ] {
        assert_eq!(
            s.store_url(kind).as_str(),
            "postgres://u@db/omniq",
            "{kind:?}"
        );
    }
    assert_eq!(s.store_url(StoreKind::Events).backend(), Backend::Memory);
    Ok(())
}

/// Results, events and schedules left unset live where the tasks do, not in a local SQLite
/// file: a producer on another machine waiting for a result its workers stored finds it.
#[test]
fn unset_stores_follow_the_task_queue() -> TestResult {
    let s = Settings::builder()
        .env_from(env(&[
            ("OMNIQ_TASK_QUEUE_URL", "redis://cache:6379/0"),
            ("OMNIQ_RESULT_STORAGE_URL", "sqlite:///srv/results.db"),
        ]))
        .build()?;
    assert_eq!(s.store_url(StoreKind::Results).backend(), Backend::Sqlite);
    for kind in [StoreKind::Events, StoreKind::Schedules] {
        assert_eq!(
            s.store_url(kind).as_str(),
            "redis://cache:6379/0",
            "{kind:?}"
        );
    }
    // `url` wins over following the task queue.
    let s = Settings::builder()
        .env_from(env(&[
            ("OMNIQ_URL", "postgres://u@db/omniq"),
            ("OMNIQ_TASK_QUEUE_URL", "redis://cache:6379/0"),
        ]))
        .build()?;
    assert_eq!(s.store_url(StoreKind::TaskQueue).backend(), Backend::Redis);
    assert_eq!(s.store_url(StoreKind::Results).backend(), Backend::Postgres);
    Ok(())
}

#[test]
fn memory_settings() {
    let s = Settings::memory();
    for kind in StoreKind::ALL {
        assert_eq!(s.store_url(kind).backend(), Backend::Memory);
        assert_eq!(
            s.configured_store_url(kind).map(StoreUrl::as_str),
            Some("memory://")
        );
    }
}

#[test]
fn store_kind_keys() {
    assert_eq!(StoreKind::TaskQueue.key(), "task_queue_url");
    assert_eq!(StoreKind::TaskQueue.env_key(), "OMNIQ_TASK_QUEUE_URL");
    assert_eq!(StoreKind::Results.env_key(), "OMNIQ_RESULT_STORAGE_URL");
    assert_eq!(StoreKind::Events.env_key(), "OMNIQ_EVENT_STORAGE_URL");
    assert_eq!(StoreKind::Schedules.env_key(), "OMNIQ_SCHEDULE_STORAGE_URL");
}

#[test]
fn yaml_file_values() -> TestResult {
    let file = yaml_file(
        "# OmniQ settings
base_dir: /srv/omniq
task_queue_url: redis://:pw@cache:6379/0
result_storage_url: sqlite:///srv/omniq/results.db
event_storage_url: memory://
schedule_storage_url: postgres://u:p@db/omniq
log_level: debug
default_worker: thread
task_ttl: 2h
result_ttl: none
max_attempts: 5
timeout: 90
max_payload_bytes: 2MiB
codec: json
concurrency: 4
queues: [high, default, low]
lease: 1m
heartbeat: 20s
shutdown_grace: 1m30s
poll_interval: 250ms
",
    )?;
    let s = Settings::builder().file(file.path()).build()?;
    assert_eq!(s.base_dir, PathBuf::from("/srv/omniq"));
    assert_eq!(s.store_url(StoreKind::TaskQueue).backend(), Backend::Redis);
    assert_eq!(
        s.store_url(StoreKind::TaskQueue).as_str(),
        "redis://:pw@cache:6379/0"
    );
    assert_eq!(
        s.store_url(StoreKind::Results).sqlite_path(),
        Some(PathBuf::from("/srv/omniq/results.db"))
    );
    assert_eq!(s.store_url(StoreKind::Events).backend(), Backend::Memory);
    assert_eq!(
        s.store_url(StoreKind::Schedules).backend(),
        Backend::Postgres
    );
    assert_eq!(s.log_level, "debug");
    assert_eq!(s.default_worker, WorkerKind::Thread);
    assert_eq!(s.task_ttl, Some(Duration::from_secs(7_200)));
    assert_eq!(s.result_ttl, None);
    assert_eq!(s.max_attempts, 5);
    assert_eq!(s.timeout, Some(Duration::from_secs(90)));
    assert_eq!(s.max_payload_bytes, 2 * 1_048_576);
    assert_eq!(s.codec, Format::Json);
    assert_eq!(s.concurrency, 4);
    assert_eq!(s.queues, ["high", "default", "low"]);
    assert_eq!(s.lease, Duration::from_secs(60));
    assert_eq!(s.heartbeat, Duration::from_secs(20));
    assert_eq!(s.shutdown_grace, Duration::from_secs(90));
    assert_eq!(s.poll_interval, Duration::from_millis(250));
    Ok(())
}

#[test]
fn empty_yaml_file_gives_defaults() -> TestResult {
    let file = yaml_file("# nothing here\n")?;
    assert_eq!(
        Settings::builder().file(file.path()).build()?,
        Settings::default()
    );
    Ok(())
}

#[test]
fn file_errors() -> TestResult {
    let missing = Path::new("/definitely/not/here/omniq.yaml");
    let err = build_err(Settings::builder().file(missing));
    assert!(
        matches!(&err, ConfigError::File { path, .. } if path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("not found"), "{err}");

    let err = build_err(
        Settings::builder().env_from(env(&[("OMNIQ_CONFIG", "/definitely/not/here.yaml")])),
    );
    assert!(matches!(err, ConfigError::File { .. }), "{err}");

    let file = yaml_file("task_ttl: [unclosed\n")?;
    let err = build_err(Settings::builder().file(file.path()));
    assert!(matches!(err, ConfigError::File { .. }), "{err}");

    let file = yaml_file("- a list\n- not a mapping\n")?;
    let err = build_err(Settings::builder().file(file.path()));
    assert!(matches!(err, ConfigError::File { .. }), "{err}");

    let file = yaml_file("task_tll: 5m\n")?;
    let err = build_err(Settings::builder().file(file.path()));
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "task_tll"),
        "{err}"
    );
    Ok(())
}

/// The same key at every level: each level overrides the one below it.
#[test]
fn precedence_file_map_env_code() -> TestResult {
    let file = yaml_file("max_attempts: 2\ntask_ttl: 1m\nlog_level: warn\nconcurrency: 3\n")?;
    let path = file.path();

    let file_only = Settings::builder().file(path).build()?;
    assert_eq!(file_only.max_attempts, 2);

    let map = [
        ("max_attempts", "3"),
        ("task_ttl", "2m"),
        ("log_level", "error"),
    ];
    let with_map = Settings::builder().file(path).map(map).build()?;
    assert_eq!(with_map.max_attempts, 3);
    assert_eq!(with_map.task_ttl, Some(Duration::from_secs(120)));
    assert_eq!(with_map.concurrency, 3, "file value kept when map lacks it");

    let vars = env(&[("OMNIQ_MAX_ATTEMPTS", "4"), ("OMNIQ_TASK_TTL", "3m")]);
    // Call order does not matter: env still beats map, map beats file.
    let with_env = Settings::builder()
        .env_from(vars.clone())
        .map(map)
        .file(path)
        .build()?;
    assert_eq!(with_env.max_attempts, 4);
    assert_eq!(with_env.task_ttl, Some(Duration::from_secs(180)));
    assert_eq!(
        with_env.log_level, "error",
        "map value kept when env lacks it"
    );

    let with_code = Settings::builder()
        .file(path)
        .map(map)
        .env_from(vars.clone())
        .set("max_attempts", "5")
        .build()?;
    assert_eq!(with_code.max_attempts, 5);

    let mut mutated = Settings::builder()
        .file(path)
        .map(map)
        .env_from(vars)
        .build()?;
    mutated.max_attempts = 6;
    mutated.validate()?;
    assert_eq!(mutated.max_attempts, 6);
    Ok(())
}

#[test]
fn omniq_config_file_sits_below_map() -> TestResult {
    let file = yaml_file("max_attempts: 2\nconcurrency: 7\n")?;
    let path = file.path().to_string_lossy().into_owned();
    let s = Settings::builder()
        .env_from(env(&[("OMNIQ_CONFIG", &path)]))
        .map([("max_attempts", "3")])
        .build()?;
    assert_eq!(s.max_attempts, 3);
    assert_eq!(s.concurrency, 7);

    // ...but above explicitly given files.
    let explicit = yaml_file("concurrency: 1\nlease: 45s\n")?;
    let s = Settings::builder()
        .env_from(env(&[("OMNIQ_CONFIG", &path)]))
        .file(explicit.path())
        .build()?;
    assert_eq!(s.concurrency, 7);
    assert_eq!(s.lease, Duration::from_secs(45));
    Ok(())
}

#[test]
fn map_keys_are_case_insensitive_and_may_be_prefixed() -> TestResult {
    let s = Settings::builder()
        .map([
            ("OMNIQ_TASK_TTL", "5m"),
            ("Max_Attempts", "9"),
            ("  codec ", "JSON"),
        ])
        .build()?;
    assert_eq!(s.task_ttl, Some(Duration::from_secs(300)));
    assert_eq!(s.max_attempts, 9);
    assert_eq!(s.codec, Format::Json);

    let err = build_err(Settings::builder().map([("max_attempt", "9")]));
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "max_attempt"),
        "{err}"
    );
    Ok(())
}

#[test]
fn env_strings_for_every_type() -> TestResult {
    let s = Settings::builder()
        .env_from(env(&[
            ("OMNIQ_QUEUES", "a, b,c"),
            ("OMNIQ_CONCURRENCY", "8"),
            ("OMNIQ_MAX_PAYLOAD_BYTES", "65536"),
            ("OMNIQ_DEFAULT_WORKER", "thread"),
            ("OMNIQ_LOG_LEVEL", "omniq=debug,warn"),
            ("OMNIQ_TIMEOUT", "45"),
            ("OMNIQ_RESULT_TTL", "never"),
            ("OMNIQ_TASK_QUEUE_URL", "nats://queue:4222"),
            ("OMNIQ_LEASE", ""),           // empty = unset
            ("OMNIQ_SOMETHING_ELSE", "x"), // unknown env vars are ignored
            ("PATH", "/usr/bin"),
        ]))
        .build()?;
    assert_eq!(s.queues, ["a", "b", "c"]);
    let bracketed = Settings::builder().map([("queues", "[x, y]")]).build()?;
    assert_eq!(bracketed.queues, ["x", "y"]);
    assert_eq!(s.concurrency, 8);
    assert_eq!(s.max_payload_bytes, 65_536);
    assert_eq!(s.default_worker, WorkerKind::Thread);
    assert_eq!(s.log_level, "omniq=debug,warn");
    assert_eq!(s.timeout, Some(Duration::from_secs(45)));
    assert_eq!(s.result_ttl, None);
    assert_eq!(s.lease, Duration::from_secs(30));
    assert_eq!(s.store_url(StoreKind::TaskQueue).backend(), Backend::Nats);
    Ok(())
}

#[test]
fn durations_in_all_forms() -> TestResult {
    let file = yaml_file(
        "lease: 45\ntask_ttl: \"90\"\nshutdown_grace: 1h30m\npoll_interval: 250ms\nresult_ttl: 1d\ntimeout: 2.5\n",
    )?;
    let s = Settings::builder().file(file.path()).build()?;
    assert_eq!(s.lease, Duration::from_secs(45));
    assert_eq!(s.task_ttl, Some(Duration::from_secs(90)));
    assert_eq!(s.shutdown_grace, Duration::from_secs(5_400));
    assert_eq!(s.poll_interval, Duration::from_millis(250));
    assert_eq!(s.result_ttl, Some(Duration::from_secs(86_400)));
    assert_eq!(s.timeout, Some(Duration::from_millis(2_500)));

    for (text, expected) in [
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("2h", Duration::from_secs(7_200)),
        ("1d", Duration::from_secs(86_400)),
        ("1h30m", Duration::from_secs(5_400)),
        ("45", Duration::from_secs(45)),
    ] {
        let s = Settings::builder()
            .map([("shutdown_grace", text)])
            .build()?;
        assert_eq!(s.shutdown_grace, expected, "{text}");
        let s = Settings::builder()
            .env_from(env(&[("OMNIQ_TASK_TTL", text)]))
            .build()?;
        assert_eq!(s.task_ttl, Some(expected), "{text}");
    }
    Ok(())
}

#[test]
fn bad_duration_names_the_key() {
    let err = build_err(Settings::builder().map([("task_ttl", "10 parsecs")]));
    assert_eq!(
        err.to_string(),
        "invalid value for `task_ttl`: unknown duration unit `parsecs`"
    );
    assert_eq!(err.key(), Some("task_ttl"));

    for (key, bad) in [
        ("lease", "-5s"),
        ("heartbeat", ""),
        ("timeout", "soon"),
        ("lease", "1h30"),
    ] {
        let err = build_err(Settings::builder().map([(key, bad)]));
        assert!(
            matches!(&err, ConfigError::InvalidValue { key: k, .. } if k == key),
            "{key}={bad:?}: {err}"
        );
    }

    let file = match yaml_file("lease: -5\n") {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    };
    let err = build_err(Settings::builder().file(file.path()));
    assert_eq!(err.key(), Some("lease"), "{err}");
}

#[test]
fn bad_numbers_and_enums_name_the_key() {
    for (key, bad) in [
        ("max_attempts", "many"),
        ("max_attempts", "-1"),
        ("concurrency", "1.5"),
        ("max_payload_bytes", "1 parsec"),
        ("default_worker", "fork"),
        ("codec", "xml"),
    ] {
        let err = build_err(Settings::builder().map([(key, bad)]));
        assert!(
            err.to_string()
                .starts_with(&format!("invalid value for `{key}`: ")),
            "{key}={bad:?}: {err}"
        );
    }
}

#[test]
fn validation_names_the_key() {
    let err = build_err(Settings::builder().map([("max_attempts", "0")]));
    assert_eq!(err.key(), Some("max_attempts"), "{err}");
    let err = build_err(Settings::builder().map([("concurrency", "0")]));
    assert_eq!(err.key(), Some("concurrency"), "{err}");
    let err = build_err(Settings::builder().map([("queues", " , ")]));
    assert_eq!(err.key(), Some("queues"), "{err}");
}

#[test]
fn heartbeat_must_be_shorter_than_lease() -> TestResult {
    for (heartbeat, lease) in [("30s", "30s"), ("1m", "30s")] {
        let err = build_err(Settings::builder().map([("heartbeat", heartbeat), ("lease", lease)]));
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "heartbeat"),
            "{err}"
        );
        assert!(err.to_string().contains("lease"), "{err}");
    }
    let s = Settings::builder()
        .map([("heartbeat", "29s"), ("lease", "30s")])
        .build()?;
    assert_eq!(s.heartbeat, Duration::from_secs(29));

    let mut s = Settings::default();
    s.heartbeat = s.lease;
    assert!(s.validate().is_err());
    Ok(())
}

#[test]
fn bad_scheme_names_key_and_scheme() {
    let err = build_err(
        Settings::builder().env_from(env(&[("OMNIQ_TASK_QUEUE_URL", "foo://u:hunter2@h/q")])),
    );
    assert_eq!(
        err,
        ConfigError::UnknownScheme {
            key: Some("task_queue_url".into()),
            scheme: "foo".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown URL scheme `foo` for `task_queue_url`"
    );

    let err = build_err(Settings::builder().map([("result_storage_url", "hunter2")]));
    assert!(
        matches!(&err, ConfigError::InvalidUrl { key: Some(k), .. } if k == "result_storage_url"),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let file = match yaml_file("event_storage_url: 42\n") {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    };
    let err = build_err(Settings::builder().file(file.path()));
    assert_eq!(err.key(), Some("event_storage_url"), "{err}");
}

#[test]
fn secrets_never_leak() -> TestResult {
    let s = Settings::builder()
        .map([
            ("task_queue_url", "postgres://app:hunter2@db/omniq"),
            (
                "result_storage_url",
                "s3://bucket/results?region=eu&secret_access_key=hunter3",
            ),
        ])
        .build()?;
    let url = s.store_url(StoreKind::TaskQueue);
    assert_eq!(url.as_str(), "postgres://app:hunter2@db/omniq");
    assert_eq!(url.redacted(), "postgres://app:***@db/omniq");
    assert_eq!(url.to_string(), "postgres://app:***@db/omniq");
    let debug = format!("{s:?} {url:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("hunter3"), "{debug}");
    assert!(debug.contains("postgres://app:***@db/omniq"), "{debug}");

    // A URL put where a number belongs: the error echoes it redacted.
    let err = build_err(Settings::builder().map([("max_attempts", "postgres://app:hunter2@db/x")]));
    assert_eq!(err.key(), Some("max_attempts"));
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    // A URL with a bad scheme: the error names only the scheme.
    let err = build_err(Settings::builder().map([("task_queue_url", "pg://app:hunter2@db/x")]));
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    // Builder Debug shows keys, not values.
    let builder = Settings::builder().map([("task_queue_url", "postgres://app:hunter2@db/x")]);
    assert!(!format!("{builder:?}").contains("hunter2"));
    Ok(())
}

#[test]
fn serde_round_trip() -> TestResult {
    let mut s = Settings::memory();
    s.task_ttl = Some(Duration::from_millis(1_500));
    s.lease = Duration::from_secs(86_400);
    s.task_queue_url = Some("postgres://u:p@h/db".parse()?);
    let yaml = serde_saphyr::to_string(&s)?;
    assert!(yaml.contains("1s500ms"), "{yaml}");
    assert!(yaml.contains("lease: 1d"), "{yaml}");
    assert!(yaml.contains("codec: msgpack"), "{yaml}");
    assert!(yaml.contains("default_worker: async"), "{yaml}");

    let file = yaml_file(&yaml)?;
    let back = Settings::builder().file(file.path()).build()?;
    assert_eq!(back, s);

    let direct: Settings = serde_saphyr::from_str(&yaml)?;
    assert_eq!(direct, s);
    Ok(())
}

#[test]
fn the_scheduler_can_be_switched_off_from_the_environment() {
    let settings = Settings::builder()
        .env_from([("OMNIQ_SCHEDULER".to_owned(), "false".to_owned())])
        .build()
        .expect("valid");
    assert!(!settings.scheduler);
    assert!(Settings::default().scheduler);
    let from_map = Settings::builder()
        .map([("scheduler", "false")])
        .build()
        .expect("valid");
    assert!(!from_map.scheduler);
}
