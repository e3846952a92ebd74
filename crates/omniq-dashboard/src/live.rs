//! Live counts for the queues page, as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use crate::App;
use crate::html::age;
use crate::pages::COLUMNS;

/// How often the counts are read and sent.
const EVERY: Duration = Duration::from_secs(2);

/// Every [`EVERY`], each queue's counts per state, the age of its oldest queued task and its
/// finished tasks, and the number of finished tasks overall (for the page's throughput). A store error skips a round.
pub(crate) async fn counts(
    State(app): State<App>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(app, |app| async move {
        loop {
            tokio::time::sleep(EVERY).await;
            let Ok(queues) = app.omniq.queues().await else {
                continue;
            };
            let mut finished = 0;
            let now = chrono::Utc::now();
            let queues: Vec<_> = queues
                .iter()
                .map(|stats| {
                    let done = stats
                        .counts
                        .iter()
                        .filter(|(state, _)| state.is_terminal())
                        .map(|(_, n)| n)
                        .sum::<u64>();
                    finished += done;
                    let counts: serde_json::Map<String, serde_json::Value> = COLUMNS
                        .iter()
                        .map(|s| (s.as_str().to_owned(), json!(stats.count(*s))))
                        .collect();
                    let oldest = stats
                        .oldest_queued_at
                        .map_or_else(|| "-".to_owned(), |at| age((now - at).num_seconds()));
                    json!({
                        "queue": stats.queue,
                        "counts": counts,
                        "oldest": oldest,
                        "finished": done,
                    })
                })
                .collect();
            let data = json!({
                "at": now.timestamp_millis(),
                "finished": finished,
                "queues": queues,
            });
            return Some((Ok(Event::default().data(data.to_string())), app));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
