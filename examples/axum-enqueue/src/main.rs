//! An axum app that enqueues a task from a request handler and runs a worker beside the
//! server, both stopping on Ctrl-C.
//!
//! Needs nothing but a free port (`PORT`, default 3000); OmniQ runs on its embedded SQLite
//! default under `./.omniq`, or wherever `OMNIQ_URL` points.
//!
//! ```text
//! cargo run -p example-axum-enqueue
//! curl -X POST localhost:3000/signups -H 'content-type: application/json' -d '{"email":"ada@example.com"}'
//! curl localhost:3000/tasks/<id>
//! curl -N localhost:3000/events        # every lifecycle event, live (server-sent events)
//! ```

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use omniq_async::prelude::*;
use serde::{Deserialize, Serialize};

/// Sends the welcome email (here: says it did).
#[task(queue = "emails", max_attempts = 5)]
async fn send_welcome(email: String) -> Result<String, TaskError> {
    Ok(format!("welcome sent to {email}"))
}

#[derive(Deserialize)]
struct Signup {
    email: String,
}

#[derive(Serialize)]
struct Enqueued {
    task_id: String,
}

/// Enqueues and answers at once: the email goes out in the background.
async fn signup(
    State(omniq): State<AsyncOmniQ>,
    Json(signup): Json<Signup>,
) -> Result<(StatusCode, Json<Enqueued>), (StatusCode, String)> {
    let handle = omniq
        .enqueue(send_welcome {
            email: signup.email,
        })
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Enqueued {
            task_id: handle.id().to_string(),
        }),
    ))
}

/// The task's state, for a client polling it.
async fn task_state(
    State(omniq): State<AsyncOmniQ>,
    Path(id): Path<String>,
) -> Result<String, (StatusCode, String)> {
    let id = id
        .parse::<TaskId>()
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    match omniq.task(id).await {
        Ok(Some(record)) => Ok(record.state.to_string()),
        Ok(None) => Err((StatusCode::NOT_FOUND, format!("no task {id}"))),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// This process's lifecycle events as they happen (the worker runs beside the server, so
/// its events are here too), one JSON object per server-sent event.
async fn events(
    State(omniq): State<AsyncOmniQ>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = omniq.events().subscribe().into_stream().map(|event| {
        let data =
            serde_json::to_string(&event).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Ok(Event::default().event(event.kind.as_str()).data(data))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let omniq = AsyncOmniQ::from_env().await?.register::<send_welcome>();
    let worker = omniq.worker().queues(["emails"]).start()?;

    let app = Router::new()
        .route("/signups", post(signup))
        .route("/tasks/{id}", get(task_state))
        .route("/events", get(events))
        .with_state(omniq.clone());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(omniq_async::shutdown_signal())
        .await?;

    // The server has stopped taking requests: let running tasks finish, then stop.
    worker.shutdown().await?;
    omniq.close().await;
    Ok(())
}
