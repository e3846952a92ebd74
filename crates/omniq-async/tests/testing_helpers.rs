//! `omniq_async::testing`: inline runs with state, what was enqueued, draining queues.

use std::time::Duration;

use omniq_async::prelude::*;
use omniq_async::{Error, testing};

struct Greeting(&'static str);

#[task]
async fn greet(name: String, greeting: State<Greeting>) -> Result<String, TaskError> {
    if name.is_empty() {
        return Err(TaskError::permanent("nobody to greet"));
    }
    Ok(format!("{}, {name}", greeting.0))
}

/// Enqueues a follow-up on another queue, as code under test does.
#[task(queue = "first")]
async fn chain(n: u32, ctx: TaskContext) -> Result<u32, TaskError> {
    let omniq = ctx.state::<AsyncOmniQ>()?;
    if n > 0 {
        omniq
            .enqueue(chain { n: n - 1 })
            .queue(format!("queue-{n}"))
            .await
            .map_err(|e| TaskError::new(e.to_string()))?;
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_calls_a_task_inline_with_the_registered_state() {
    let omniq = testing::memory()
        .await
        .expect("memory")
        .state(Greeting("Hello"))
        .register::<greet>();
    let greeted = testing::run(&omniq, greet { name: "Ada".into() })
        .await
        .expect("run");
    assert_eq!(greeted, "Hello, Ada");
    match testing::run(
        &omniq,
        greet {
            name: String::new(),
        },
    )
    .await
    {
        Err(Error::TaskFailed { error, .. }) => assert_eq!(error.message, "nobody to greet"),
        other => panic!("expected the task's error, got {other:?}"),
    }
    // Inline runs touch no queue.
    assert!(omniq.queues().await.expect("queues").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_lists_waiting_tasks_of_a_type_oldest_first() {
    let omniq = testing::memory().await.expect("memory").register::<greet>();
    for name in ["a", "b", "c"] {
        omniq
            .enqueue(greet { name: name.into() })
            .await
            .expect("enqueue");
    }
    omniq
        .enqueue(greet {
            name: "later".into(),
        })
        .delay(Duration::from_secs(3600))
        .await
        .expect("enqueue");
    omniq.enqueue(chain { n: 0 }).await.expect("enqueue");
    let names: Vec<String> = testing::enqueued::<greet, _>(&omniq)
        .await
        .expect("enqueued")
        .into_iter()
        .map(|task| task.name)
        .collect();
    assert_eq!(names, ["a", "b", "c", "later"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_runs_everything_due_including_what_tasks_enqueue_elsewhere() {
    let omniq = testing::memory().await.expect("memory");
    let omniq = omniq
        .clone()
        .state(omniq.clone())
        .state(Greeting("Hi"))
        .register::<chain>()
        .register::<greet>();
    let first = omniq.enqueue(chain { n: 3 }).await.expect("enqueue");
    let later = omniq
        .enqueue(greet {
            name: "later".into(),
        })
        .delay(Duration::from_secs(3600))
        .await
        .expect("enqueue");
    let report = testing::drain(&omniq).await.expect("drain");
    assert_eq!(report.succeeded, 4, "chain 3, 2, 1, 0 on four queues");
    assert_eq!(first.try_result().await.expect("result"), Some(3));
    assert_eq!(
        later.record().await.expect("record").state,
        TaskState::Scheduled,
        "a task due later is left"
    );
}
