//! An axum app that enqueues a task from a request handler, shows its result, streams
//! lifecycle events, and mounts the OmniQ dashboard behind the app's own auth; a worker runs
//! beside the server, and both stop on Ctrl-C or SIGTERM.
//!
//! Needs nothing but a free port (`PORT`, default 3000; 0 picks one); OmniQ runs on its
//! embedded SQLite default under `./.omniq`, or wherever `OMNIQ_URL` points. The dashboard
//! asks for `ADMIN_TOKEN` (default: a random one, printed at start).
//!
//! ```text
//! cargo run -p example-axum-enqueue
//! curl -X POST localhost:3000/signups -H 'content-type: application/json' -d '{"email":"ada@example.com"}'
//! curl localhost:3000/tasks/<id>       # {"state":"succeeded","result":"welcome sent to ada@example.com"}
//! curl -N localhost:3000/events        # every lifecycle event, live (server-sent events)
//! open http://localhost:3000/admin/queues    # user "admin", the token as password
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::{Stream, StreamExt};
use omniq_async::prelude::*;
use omniq_dashboard::Dashboard;
use serde::{Deserialize, Serialize};

/// The app's state: OmniQ beside whatever else the app keeps. Handlers take
/// `State<AsyncOmniQ>` through [`FromRef`].
#[derive(Clone)]
struct AppState {
    omniq: AsyncOmniQ,
    /// The `Authorization` values the admin pages accept.
    admin_credentials: Arc<[String; 2]>,
}

impl FromRef<AppState> for AsyncOmniQ {
    fn from_ref(state: &AppState) -> Self {
        state.omniq.clone()
    }
}

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

#[derive(Serialize)]
struct TaskView {
    state: String,
    /// The task's return value, once it has succeeded.
    result: Option<String>,
    /// Its last error, if an attempt failed.
    error: Option<String>,
}

/// The task's state and, once it has succeeded, its result: for a client polling it.
async fn task_state(
    State(omniq): State<AsyncOmniQ>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, (StatusCode, String)> {
    let unavailable = |e: omniq_async::Error| (StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let id = id
        .parse::<TaskId>()
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let record = omniq
        .task(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no task {id}")))?;
    // A dead letter's result is its failure, shown as `error` below.
    let result = if record.state == TaskState::Succeeded {
        omniq
            .handle::<String>(id)
            .try_result()
            .await
            .map_err(unavailable)?
    } else {
        None
    };
    Ok(Json(TaskView {
        state: record.state.to_string(),
        result,
        error: record.last_error().map(|e| e.message.clone()),
    }))
}

/// The app's own auth in front of the admin pages: here a token, as HTTP Basic (user
/// `admin`, so a browser asks for it) or Bearer; in a real app, its sessions or SSO.
async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if presented.is_some_and(|p| state.admin_credentials.iter().any(|c| c == p)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"admin\"")],
        "the admin token is required",
    )
        .into_response()
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

    let given = std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let token = given
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{token}"));
    let state = AppState {
        omniq: omniq.clone(),
        admin_credentials: Arc::new([format!("Basic {basic}"), format!("Bearer {token}")]),
    };
    // The dashboard, nested where the app wants it, behind the app's auth layer.
    let admin = Dashboard::new(omniq.clone())
        .base_path("/admin/queues")
        .router()
        .layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let app = Router::new()
        .route("/signups", post(signup))
        .route("/tasks/{id}", get(task_state))
        .route("/events", get(events))
        .with_state(state)
        .nest("/admin/queues", admin);

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    if given.is_none() {
        println!("dashboard on http://{addr}/admin/queues (user admin, password {token})");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(omniq_async::shutdown_signal())
        .await?;

    // The server has stopped taking requests: let running tasks finish, then stop.
    worker.shutdown().await?;
    omniq.close().await;
    Ok(())
}
