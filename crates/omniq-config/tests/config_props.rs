//! Property tests: arbitrary durations, URLs, key/value maps, environments and YAML files
//! never panic the configuration parser; every failure is a typed `ConfigError`.

use std::io::Write;

use omniq_config::{ConfigError, Settings, StoreUrl, parse_duration};
use proptest::prelude::*;

/// The configuration keys, plus near misses.
const KEYS: [&str; 24] = [
    "base_dir",
    "task_queue_url",
    "result_storage_url",
    "event_storage_url",
    "schedule_storage_url",
    "log_level",
    "default_worker",
    "task_ttl",
    "result_ttl",
    "task_retention",
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
    "scheduler",
    "url",
    "no_such_key",
];

/// Values that look like what the keys take, and values that do not.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (
            any::<u64>(),
            prop::sample::select(vec!["", "ms", "s", "m", "h", "d", "w", "x"])
        )
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        "[0-9]{1,30}(\\.[0-9]{0,12})?(ns|us|ms|s|m|h|d)?",
        prop::sample::select(vec![
            "none",
            "memory://",
            "sqlite://",
            "redis://:pw@h:99999/0",
            "postgres://u@/db?schema=",
            "json",
            "msgpack",
            "thread",
            "async",
            "-1",
            "0",
            "true",
            "a,b,,c",
            "1e400",
            "",
        ])
        .prop_map(str::to_owned),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        prop::sample::select(KEYS.to_vec()).prop_map(str::to_uppercase),
        "[A-Za-z_.-]{0,20}",
    ]
}

/// A build either succeeds or fails with a typed error that says something.
fn check(result: Result<Settings, ConfigError>) {
    if let Err(err) = result {
        assert!(!err.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn durations_never_panic(input in value()) {
        let _ = parse_duration(&input);
    }

    #[test]
    fn store_urls_never_panic(input in prop_oneof![any::<String>(), "[a-z+]{0,8}://[ -~]{0,40}"]) {
        let _ = StoreUrl::parse(&input);
    }

    #[test]
    fn key_value_maps_never_panic(pairs in prop::collection::vec((key(), value()), 0..8)) {
        check(Settings::builder().map(pairs).build());
    }

    #[test]
    fn environments_never_panic(pairs in prop::collection::vec((key(), value()), 0..8)) {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (format!("OMNIQ_{}", k.to_uppercase()), v));
        check(Settings::builder().env_from(vars).build());
    }

    #[test]
    fn yaml_files_never_panic(
        lines in prop::collection::vec((key(), value()), 0..8),
        noise in "[ -~\n\t]{0,200}",
        raw in any::<bool>(),
    ) {
        let text = if raw {
            noise
        } else {
            lines
                .iter()
                .map(|(k, v)| format!("{k}: {v:?}\n"))
                .collect::<String>()
        };
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        check(Settings::builder().file(file.path()).build());
    }
}
