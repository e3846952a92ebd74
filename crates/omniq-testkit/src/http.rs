//! HTTP/1.1 over a fresh connection per request, `Connection: close`, `Host: localhost`
//! (the dashboard served alone answers only loopback names).

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::ToSocketAddrs;

use crate::WAIT;

/// A server's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body, as sent (chunks are not decoded).
    pub body: String,
}

impl Reply {
    /// The value of the header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Sends one request; a form or JSON body with its content type. Headers given override
/// none of the defaults, so do not pass `Host` or `Content-Length`.
///
/// # Errors
/// The server cannot be reached, says nothing within [`WAIT`], or answers what is not HTTP.
pub async fn request(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> anyhow::Result<Reply> {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .context("connecting took too long")??;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let (content_type, body) = body.unwrap_or_default();
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut raw))
        .await
        .with_context(|| format!("{method} {path}: no whole answer within {WAIT:?}"))??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// A form POST (`application/x-www-form-urlencoded`).
///
/// # Errors
/// As [`request`].
pub async fn post_form(
    addr: impl ToSocketAddrs,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> anyhow::Result<Reply> {
    request(
        addr,
        "POST",
        path,
        headers,
        Some(("application/x-www-form-urlencoded", form)),
    )
    .await
}

/// GETs `path`, which must answer 200; its body.
///
/// # Errors
/// As [`request`], or another status.
pub async fn get(addr: impl ToSocketAddrs, path: &str) -> anyhow::Result<String> {
    let reply = request(addr, "GET", path, &[], None).await?;
    ensure!(
        reply.status == 200,
        "GET {path}: {}\n{}",
        reply.status,
        reply.body
    );
    Ok(reply.body)
}

/// Scrapes `/metrics` until every line of `wanted` is in the page, within [`WAIT`] (gauges
/// are read at an interval); the last page.
///
/// # Errors
/// A failed scrape, or the lines not all there in time.
pub async fn scrape_until(
    addr: impl ToSocketAddrs + Clone,
    wanted: &[&str],
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = get(addr.clone(), "/metrics").await?;
        if wanted.iter().all(|w| page.lines().any(|l| l == *w)) {
            return Ok(page);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "/metrics never read {wanted:?}:\n{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
