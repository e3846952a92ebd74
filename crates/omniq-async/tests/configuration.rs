//! Bad configuration and bad input are clear errors, named by key.

mod support;

use std::time::Duration;

use omniq_async::{
    AsyncOmniQ, Error, ErrorKind, Settings, Task, TaskContext, TaskError, TaskQuery,
};
use serde::{Deserialize, Serialize};

#[tokio::test]
async fn an_unknown_url_scheme_is_an_error_naming_the_key() {
    let err = Settings::builder()
        .map([("task_queue_url", "carrier-pigeon://coop/1")])
        .build()
        .expect_err("unknown scheme");
    let message = err.to_string();
    assert!(message.contains("task_queue_url"), "{message}");
    assert!(message.contains("carrier-pigeon"), "{message}");
}

#[tokio::test]
async fn a_bad_duration_is_an_error_naming_the_key() {
    let err = Settings::builder()
        .map([("task_ttl", "10 parsecs")])
        .build()
        .expect_err("bad duration");
    assert!(err.to_string().contains("task_ttl"), "{err}");
}

#[test]
fn a_broker_named_for_results_is_refused_naming_the_key() {
    for url in [
        "amqp://guest:secret@127.0.0.1:5672/",
        "sqs://eu-west-1?access_key_id=a&secret_access_key=secret",
    ] {
        let err = Settings::builder()
            .map([("result_storage_url", url)])
            .build()
            .expect_err("a broker holds tasks only");
        let message = err.to_string();
        assert!(message.contains("result_storage_url"), "{message}");
        assert!(message.contains("task queue only"), "{message}");
        assert!(
            !message.contains("secret"),
            "credentials never appear: {message}"
        );
    }
    // `url` alone names every store: a broker there is refused for results too.
    let err = Settings::builder()
        .map([("url", "amqp://guest:secret@127.0.0.1:5672/")])
        .build()
        .expect_err("a broker holds tasks only");
    assert!(err.to_string().contains("result_storage_url"), "{err}");
    // As the task queue beside another store, it is fine.
    Settings::builder()
        .map([
            ("url", "sqlite://omniq.db"),
            ("task_queue_url", "amqp://guest:secret@127.0.0.1:5672/"),
        ])
        .build()
        .expect("tasks on a broker, the rest in SQLite");
}

#[derive(Serialize, Deserialize)]
struct Upload(String);

impl Task for Upload {
    const NAME: &'static str = "test.upload";
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[tokio::test]
async fn an_oversized_payload_is_refused_at_enqueue_and_nothing_is_stored() {
    let h = support::sqlite(|s| s.max_payload_bytes = 128).await;
    let err = h
        .enqueue(Upload("x".repeat(1_000)))
        .await
        .expect_err("too large");
    assert!(matches!(err, Error::Serialization(_)), "{err:?}");
    assert!(
        err.to_string().contains("exceeds the limit of 128 bytes"),
        "{err}"
    );
    let stored = h.list_tasks(TaskQuery::default()).await.expect("list");
    assert!(stored.is_empty());
    // A small one still goes through.
    h.enqueue(Upload("ok".into())).await.expect("small payload");
}

#[tokio::test]
async fn state_on_disk_from_one_instance_does_not_break_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    for run in 0..2 {
        let mut settings = support::fast(Settings::default());
        settings.base_dir = dir.path().to_path_buf();
        let omniq = AsyncOmniQ::from_settings(settings)
            .await
            .expect("open")
            .register_fn("test.echo", |n: u32| async move { Ok(n) });
        let handle = omniq
            .enqueue_by_name::<u32>("test.echo", run)
            .await
            .expect("enqueue");
        let worker = omniq.worker().start().expect("start");
        assert_eq!(
            handle.wait(Duration::from_secs(20)).await.expect("result"),
            run
        );
        worker.shutdown().await.expect("shutdown");
        omniq.close().await;
    }
    assert!(dir.path().join("omniq.db").exists());
}

/// With only the task queue's URL set, a producer and a worker on two machines (two base
/// directories, so two would-be local SQLite files) share results too: they follow the task
/// queue. They used to stay in each machine's local file, so the producer waited forever.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_the_task_queue_url_set_a_producer_elsewhere_gets_its_result() {
    let producer_dir = tempfile::tempdir().expect("temp dir");
    let worker_dir = tempfile::tempdir().expect("temp dir");
    let Some(producer) = support::redis(|settings| {
        settings.result_storage_url = None;
        settings.event_storage_url = None;
        settings.schedule_storage_url = None;
        settings.base_dir = producer_dir.path().to_owned();
    })
    .await
    else {
        return;
    };
    let mut elsewhere = producer.settings().clone();
    elsewhere.base_dir = worker_dir.path().to_owned();
    let worker_side = AsyncOmniQ::from_settings(elsewhere)
        .await
        .expect("the worker's instance")
        .register::<support::Double>();
    let worker = worker_side.worker().start().expect("start");
    let handle = producer
        .enqueue_by_name::<i64>("test.double", 21)
        .await
        .expect("enqueue");
    assert_eq!(handle.wait(support::WAIT).await.expect("result"), 42);
    worker.shutdown().await.expect("shutdown");
    for dir in [&producer_dir, &worker_dir] {
        assert!(
            !dir.path().join("omniq.db").exists(),
            "no store fell back to a local SQLite file"
        );
    }
}

/// A pool size in a store URL is read by the backend, and a bad one is refused before
/// anything connects.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_bad_pool_size_in_a_store_url_is_refused() {
    let settings = Settings::builder()
        .map([(
            "url",
            "postgres://postgres@127.0.0.1:5432/test?max_connections=none",
        )])
        .build()
        .expect("valid settings");
    let err = AsyncOmniQ::from_settings(settings)
        .await
        .expect_err("a pool of `none` connections");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("max_connections"), "{err}");
}

/// One `WorkerKind`: the setting's type is the worker's.
#[test]
fn the_settings_worker_kind_is_the_workers() {
    let mut settings = Settings::memory();
    settings.default_worker = omniq_async::WorkerKind::Thread;
    let config = omniq_async::WorkerConfig::default().kind(settings.default_worker);
    assert_eq!(config.kind, omniq_async::WorkerKind::Thread);
    let err = Settings::builder()
        .map([("default_worker", "fibers")])
        .build()
        .expect_err("an unknown kind");
    assert!(err.to_string().contains("default_worker"), "{err}");
}
