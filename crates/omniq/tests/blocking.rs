//! The blocking facade works from plain threads and from inside another runtime.

use std::time::Duration;

use omniq::{OmniQ, Settings, TaskEventKind, TaskState};

const WAIT: Duration = Duration::from_secs(20);

fn omniq() -> OmniQ {
    OmniQ::from_settings(Settings::memory())
        .expect("omniq")
        .register_fn("add", |(a, b): (i64, i64)| Ok(a + b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_can_be_used_and_dropped_inside_a_tokio_test() {
    let omniq = omniq();
    let handle = omniq
        .enqueue_by_name::<i64>("add", (2, 3))
        .submit()
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    assert_eq!(handle.wait(WAIT).expect("result"), 5);
    worker.shutdown().expect("shutdown");
    assert_eq!(handle.record().expect("record").state, TaskState::Succeeded);
    drop(handle);
    drop(omniq);
}

#[tokio::test(flavor = "current_thread")]
async fn the_facade_works_on_a_current_thread_runtime_too() {
    let omniq = omniq();
    let handle = omniq
        .enqueue_by_name::<i64>("add", (20, 22))
        .submit()
        .expect("enqueue");
    let worker = omniq.worker().start().expect("start");
    assert_eq!(handle.wait(WAIT).expect("result"), 42);
    worker.shutdown().expect("shutdown");
}

#[test]
fn many_plain_threads_share_one_facade() {
    let omniq = omniq();
    let worker = omniq.worker().concurrency(4).start().expect("start");
    std::thread::scope(|scope| {
        for t in 0..4i64 {
            let omniq = omniq.clone();
            scope.spawn(move || {
                for i in 0..25i64 {
                    let handle = omniq
                        .enqueue_by_name::<i64>("add", (t, i))
                        .submit()
                        .expect("enqueue");
                    assert_eq!(handle.wait(WAIT).expect("result"), t + i);
                }
            });
        }
    });
    let report = worker.shutdown().expect("shutdown");
    assert_eq!(report.succeeded, 100);
}

#[test]
fn events_can_be_followed_and_queried_without_async() {
    let omniq = omniq();
    let mut feed = omniq.events().subscribe();
    let handle = omniq
        .enqueue_by_name::<i64>("add", (1, 1))
        .submit()
        .expect("enqueue");
    let first = feed
        .next_timeout(WAIT)
        .expect("runtime alive")
        .expect("an event");
    assert_eq!(first.kind, TaskEventKind::Enqueued);
    assert_eq!(first.task_id, Some(handle.id()));
    let worker = omniq.worker().start().expect("start");
    assert_eq!(handle.wait(WAIT).expect("result"), 2);
    worker.shutdown().expect("shutdown");
    omniq.events().flush().expect("flush");
    let kinds: Vec<_> = omniq
        .events()
        .for_task(handle.id())
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            TaskEventKind::Enqueued,
            TaskEventKind::Started,
            TaskEventKind::Succeeded
        ]
    );
}

#[test]
fn schedules_are_created_and_fired_from_blocking_code() {
    use omniq::{MisfirePolicy, ScheduleTrigger};

    let omniq = omniq();
    let schedule = omniq
        .schedule_by_name(
            "sum",
            ScheduleTrigger::every(Duration::from_millis(100)),
            "add",
            (1, 2),
        )
        .misfire(MisfirePolicy::FireOnce)
        .max_runs(2)
        .submit()
        .expect("create");
    assert_eq!(schedule.name, "sum");
    assert_eq!(
        omniq.schedules().preview("sum", 2).expect("preview").len(),
        2
    );
    let mut fired = omniq.events().subscribe();
    let worker = omniq.worker().start().expect("start");
    let mut fires = 0;
    while fires < 2 {
        let event = fired.next_timeout(WAIT).expect("alive").expect("an event");
        if event.kind == TaskEventKind::ScheduleFired {
            fires += 1;
        }
    }
    worker.shutdown().expect("shutdown");
    let stored = omniq.schedules().get("sum").expect("get").expect("exists");
    assert_eq!(stored.fire_count, 2);
    assert!(omniq.schedules().delete("sum").expect("delete"));
}

static FACADE: std::sync::OnceLock<OmniQ> = std::sync::OnceLock::new();

/// An async task that uses the blocking facade from inside its handler.
#[derive(serde::Serialize, serde::Deserialize)]
struct Nested(i64);

impl omniq::Task for Nested {
    const NAME: &'static str = "test.nested";
    type Output = i64;
    async fn run(self, _ctx: omniq::TaskContext) -> Result<i64, omniq::TaskError> {
        let facade = FACADE
            .get()
            .ok_or_else(|| omniq::TaskError::permanent("no facade"))?;
        let inner = facade
            .enqueue_by_name::<i64>("add", (self.0, 1))
            .submit()
            .map_err(|e| omniq::TaskError::permanent(e.to_string()))?;
        // A read through the facade too.
        inner
            .record()
            .map_err(|e| omniq::TaskError::permanent(e.to_string()))?;
        Ok(self.0)
    }
}

/// Defect 20: calling the blocking facade from inside an async handler run by the facade's
/// own worker used to park the runtime thread holding the spawned call: a hang.
#[test]
fn the_facade_can_be_called_from_inside_an_async_handler() {
    let omniq = FACADE.get_or_init(|| omniq().register::<Nested>());
    let worker = omniq.worker().concurrency(4).start().expect("start");
    let handles: Vec<_> = (0..8)
        .map(|i| omniq.enqueue(Nested(i)).submit().expect("enqueue"))
        .collect();
    for (i, handle) in handles.iter().enumerate() {
        assert_eq!(handle.wait(WAIT).expect("no hang"), i as i64);
    }
    worker.shutdown().expect("shutdown");
}

/// What a blocking script shares with its tasks: a configuration, a client.
struct Greeting(&'static str);

#[test]
fn blocking_tasks_reach_application_state_through_their_context() {
    let omniq = OmniQ::from_settings(Settings::memory())
        .expect("omniq")
        .state(Greeting("hello"))
        .register_fn("greet", |name: String, ctx: omniq::TaskContext| {
            Ok(format!("{}, {name}", ctx.state::<Greeting>()?.0))
        });
    let worker = omniq.worker().start().expect("start");
    let handle = omniq
        .enqueue_by_name::<String>("greet", "Ada".to_owned())
        .submit()
        .expect("enqueue");
    assert_eq!(handle.wait(WAIT).expect("result"), "hello, Ada");
    worker.shutdown().expect("shutdown");
}

/// A blocking task defined with the attribute, with state as an argument.
#[omniq::task(queue = "text")]
fn shout(text: String, suffix: omniq::State<Suffix>) -> Result<String, omniq::TaskError> {
    Ok(format!("{}{}", text.to_uppercase(), suffix.0))
}

struct Suffix(&'static str);

#[test]
fn attribute_tasks_enqueue_through_their_helper_and_reach_state() {
    let omniq = omniq().state(Suffix("!")).register_blocking::<shout>();
    let handle = shout::enqueue(&omniq, "hey".into())
        .submit()
        .expect("enqueue");
    let worker = omniq.worker().queues(["text"]).start().expect("start");
    assert_eq!(handle.wait(WAIT).expect("result"), "HEY!");
    assert_eq!(
        omniq::testing::run_blocking(&omniq, shout { text: "a".into() }).expect("inline"),
        "A!"
    );
    worker.shutdown().expect("shutdown");
}

/// The process this attempt ran in.
#[omniq::task]
fn which_process() -> Result<u32, omniq::TaskError> {
    Ok(std::process::id())
}

/// Every worker kind starts from blocking code; a process worker's children re-run this
/// test of this binary.
#[test]
fn the_blocking_facade_starts_every_worker_kind() {
    use omniq::WorkerKind;
    let exe = std::env::current_exe().expect("test binary");
    for kind in [
        WorkerKind::Async,
        WorkerKind::Thread,
        WorkerKind::Local,
        WorkerKind::Process,
    ] {
        // A child re-runs this test up to the process worker's start, where it serves;
        // the other kinds do not run in a child (they would claim its tasks), so a child
        // goes straight there.
        if omniq::is_process_child() && kind != WorkerKind::Process {
            continue;
        }
        let omniq = omniq().register_blocking::<which_process>();
        let handle = which_process::enqueue(&omniq).submit().expect("enqueue");
        let worker = omniq
            .worker()
            .kind(kind)
            .child_command([
                exe.clone().into_os_string(),
                "the_blocking_facade_starts_every_worker_kind".into(),
                "--exact".into(),
                "--nocapture".into(),
            ])
            .start()
            .expect("start");
        let pid = handle.wait(WAIT).expect("result");
        assert_eq!(
            pid == std::process::id(),
            kind != WorkerKind::Process,
            "{kind} ran its task in process {pid}"
        );
        worker.shutdown().expect("shutdown");
    }
}
