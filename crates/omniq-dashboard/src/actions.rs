//! The actions: every POST route. Each is refused in read-only mode and without the page's
//! anti-forgery token (a page of another site cannot read it, so it cannot forge the form).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use omniq_async::{PurgeRequest, RedriveTarget, TaskId, TaskState};
use serde::Deserialize;

use crate::App;
use crate::auth::same;
use crate::pages::PageError;

#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// Where to go after (a path inside the dashboard).
    back: Option<String>,
    /// For re-drive and purge: only this queue; for pause and resume: the queue.
    queue: Option<String>,
}

type ActionResult = Result<Response, PageError>;

/// Refuses the action unless the dashboard takes actions and the form carries its token.
fn permitted(app: &App, form: &ActionForm) -> Result<(), PageError> {
    if app.config.read_only {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only".into(),
        ));
    }
    if !same(form.csrf.as_bytes(), app.config.csrf.as_bytes()) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "the form's anti-forgery token is missing or stale: reload the page".into(),
        ));
    }
    Ok(())
}

/// A redirect to `back` inside the dashboard (never to another site), else to `default`.
fn back_to(app: &App, back: Option<&str>, default: &str) -> Response {
    // A plain path of the dashboard's own: nothing a browser could read as another host.
    let plain = |p: &&str| {
        p.starts_with('/')
            && !p.starts_with("//")
            && !p.contains("..")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b))
    };
    let path = back.filter(plain).unwrap_or(default);
    Redirect::to(&format!("{}{path}", app.config.base)).into_response()
}

fn task_id(id: &str) -> Result<TaskId, PageError> {
    id.parse::<TaskId>()
        .map_err(|e| PageError(StatusCode::BAD_REQUEST, format!("`{id}`: {e}")))
}

pub(crate) async fn retry(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> ActionResult {
    permitted(&app, &form)?;
    let id = task_id(&id)?;
    app.omniq.redrive(RedriveTarget::Tasks(vec![id])).await?;
    Ok(back_to(&app, form.back.as_deref(), &format!("/tasks/{id}")))
}

pub(crate) async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> ActionResult {
    permitted(&app, &form)?;
    let id = task_id(&id)?;
    app.omniq.cancel(id).await?;
    Ok(back_to(&app, form.back.as_deref(), &format!("/tasks/{id}")))
}

pub(crate) async fn redrive(State(app): State<App>, Form(form): Form<ActionForm>) -> ActionResult {
    permitted(&app, &form)?;
    let target = match form.queue.clone().filter(|q| !q.is_empty()) {
        Some(queue) => RedriveTarget::Queue(queue),
        None => RedriveTarget::All,
    };
    app.omniq.redrive(target).await?;
    Ok(back_to(&app, form.back.as_deref(), "/dead-letters"))
}

pub(crate) async fn purge(State(app): State<App>, Form(form): Form<ActionForm>) -> ActionResult {
    permitted(&app, &form)?;
    let mut request = PurgeRequest::new().states([TaskState::Failed]);
    if let Some(queue) = form.queue.clone().filter(|q| !q.is_empty()) {
        request = request.queue(queue);
    }
    app.omniq.purge(request).await?;
    Ok(back_to(&app, form.back.as_deref(), "/dead-letters"))
}

/// Pauses or resumes the form's queue (`pause`: whether to pause).
async fn set_paused(app: &App, form: &ActionForm, pause: bool) -> ActionResult {
    permitted(app, form)?;
    let Some(queue) = form.queue.clone().filter(|q| !q.is_empty()) else {
        return Err(PageError(StatusCode::BAD_REQUEST, "no queue named".into()));
    };
    if pause {
        app.omniq.pause_queue(queue).await?;
    } else {
        app.omniq.resume_queue(queue).await?;
    }
    Ok(back_to(app, form.back.as_deref(), "/"))
}

pub(crate) async fn pause_queue(
    State(app): State<App>,
    Form(form): Form<ActionForm>,
) -> ActionResult {
    set_paused(&app, &form, true).await
}

pub(crate) async fn resume_queue(
    State(app): State<App>,
    Form(form): Form<ActionForm>,
) -> ActionResult {
    set_paused(&app, &form, false).await
}

pub(crate) async fn schedule(
    State(app): State<App>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> ActionResult {
    permitted(&app, &form)?;
    let schedules = app.omniq.schedules();
    match action.as_str() {
        "pause" => drop(schedules.pause(&name).await?),
        "resume" => drop(schedules.resume(&name).await?),
        "delete" => {
            if !schedules.delete(&name).await? {
                return Err(PageError(
                    StatusCode::NOT_FOUND,
                    format!("no schedule `{name}`"),
                ));
            }
        }
        other => {
            return Err(PageError(
                StatusCode::NOT_FOUND,
                format!("no schedule action `{other}`"),
            ));
        }
    }
    Ok(back_to(&app, form.back.as_deref(), "/schedules"))
}
