//! The token check in front of every route.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::App;

/// Lets a request through when no token is set, or when it presents the token (HTTP Basic
/// password, any user name; or `Authorization: Bearer`). Otherwise 401 with a Basic
/// challenge, so a browser asks for it.
pub(crate) async fn require_token(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.config.token else {
        if app.config.loopback_hosts_only && !loopback_host(request.headers()) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers requests to localhost only; set a token to serve it under another name",
            )
                .into_response();
        }
        return next.run(request).await;
    };
    if presented(request.headers()).is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"OmniQ\", charset=\"UTF-8\"",
        )],
        "the OmniQ dashboard needs its token",
    )
        .into_response()
}

/// Whether the request's `Host` names this machine's loopback.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // Without the port: `[::1]:8080`, `localhost:8080`, `127.0.0.1`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return Some(bearer.trim().to_owned());
    }
    let basic = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    pair.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// Compares in time independent of where the inputs differ, so that response times do not
/// reveal the token a byte at a time.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
