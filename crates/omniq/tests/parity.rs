//! The blocking facade offers what the async one does, under the same names: every public
//! method of each async type exists on its blocking twin, except the differences listed
//! here with their reason. Read from the sources, so a method added to one facade and not
//! the other fails this test.

use std::collections::BTreeSet;

/// The public methods of `impl … <type_name> …` blocks in `source`, including those
/// declared through a `forward!` list.
fn methods(source: &str, type_name: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut inside = false;
    let mut in_forward = false;
    for line in source.lines() {
        if line.starts_with("impl")
            && line
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|word| word == type_name)
        {
            inside = true;
            continue;
        }
        if inside && line == "}" {
            inside = false;
            continue;
        }
        if !inside {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed == "forward! {" {
            in_forward = true;
            continue;
        }
        if in_forward && trimmed == "}" {
            in_forward = false;
            continue;
        }
        let declared = trimmed
            .strip_prefix("pub fn ")
            .or_else(|| trimmed.strip_prefix("pub async fn "));
        let forwarded = in_forward.then(|| trimmed.strip_suffix(");")).flatten();
        if let Some(rest) = declared.or(forwarded) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && rest[name.len()..].starts_with(['(', '<']) {
                found.insert(name);
            }
        }
    }
    found
}

fn missing_from_blocking(
    async_source: &str,
    blocking_source: &str,
    async_type: &str,
    blocking_type: &str,
    allowed: &[(&str, &str)],
) -> Vec<String> {
    let blocking = methods(blocking_source, blocking_type);
    let asynchronous = methods(async_source, async_type);
    assert!(
        !asynchronous.is_empty(),
        "no methods found for {async_type}: the parser lost track of the source"
    );
    asynchronous
        .into_iter()
        .filter(|name| !blocking.contains(name))
        .filter(|name| !allowed.iter().any(|(allowed, _)| allowed == name))
        .map(|name| format!("{blocking_type}::{name}"))
        .collect()
}

#[test]
fn the_blocking_facade_has_every_method_of_the_async_one() {
    let mut missing = Vec::new();
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/omniq.rs"),
        include_str!("../src/omniq.rs"),
        "AsyncOmniQ",
        "OmniQ",
        &[
            ("from_env", "OmniQ::from_env / open build their own runtime"),
            (
                "from_settings",
                "OmniQ::from_settings builds its own runtime",
            ),
            (
                "with_stores",
                "built on AsyncOmniQ::with_stores through as_async",
            ),
            (
                "register_blocking_fn",
                "in the blocking facade every closure is blocking: register_fn",
            ),
            ("close", "the blocking facade closes on drop"),
        ],
    ));
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/worker.rs"),
        include_str!("../src/worker.rs"),
        "WorkerBuilder",
        "WorkerBuilder",
        &[],
    ));
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/enqueue.rs"),
        include_str!("../src/enqueue.rs"),
        "EnqueueBuilder",
        "EnqueueBuilder",
        &[(
            "in_transaction",
            "transactional enqueue takes an async sqlx transaction",
        )],
    ));
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/events.rs"),
        include_str!("../src/events.rs"),
        "Events",
        "Events",
        &[],
    ));
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/schedules.rs"),
        include_str!("../src/schedules.rs"),
        "Schedules",
        "Schedules",
        &[],
    ));
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/schedules.rs"),
        include_str!("../src/schedules.rs"),
        "ScheduleBuilder",
        "ScheduleBuilder",
        &[],
    ));
    missing.extend(missing_from_blocking(
        include_str!("../../omniq-async/src/handle.rs"),
        include_str!("../src/handle.rs"),
        "TaskHandle",
        "TaskHandle",
        &[],
    ));
    assert!(missing.is_empty(), "the blocking facade lacks: {missing:?}");
}

/// Builders finish with one verb in the blocking facade: `submit` (`start` for workers).
#[test]
fn blocking_builders_finish_with_submit() {
    for (source, builder) in [
        (include_str!("../src/enqueue.rs"), "EnqueueBuilder"),
        (include_str!("../src/schedules.rs"), "ScheduleBuilder"),
    ] {
        let found = methods(source, builder);
        assert!(
            found.contains("submit"),
            "{builder} has no submit: {found:?}"
        );
        for other in ["create", "send", "run", "execute", "build"] {
            assert!(
                !found.contains(other),
                "{builder} also finishes with {other}"
            );
        }
    }
}

#[test]
fn the_parser_reads_methods_and_forwarded_setters() {
    let source = "impl<R> Thing<R> {\n    forward! {\n        /// Doc.\n        queue(queue: String);\n    }\n\n    pub fn submit(self) -> u32 {\n        1\n    }\n\n    pub async fn wait<T>(&self) {}\n}\n";
    let found: Vec<_> = methods(source, "Thing").into_iter().collect();
    assert_eq!(found, ["queue", "submit", "wait"]);
}
