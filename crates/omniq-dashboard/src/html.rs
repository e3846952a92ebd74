//! HTML by hand: escaping, the page layout, and the pieces pages share.

use std::fmt::Write;

use axum::response::Html;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::Config;

/// Text made safe for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text made safe for a URL query value.
pub(crate) fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// How long ago, for people: `4s`, `12m`, `3h`, `2d`.
pub(crate) fn age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m", seconds / 60),
        3_600..86_400 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:center}\
header a{color:#c9d3e6;text-decoration:none}header a.on{color:#fff;font-weight:600}\
main{padding:1em 1.2em}table{border-collapse:collapse;width:100%;margin:.6em 0}\
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e3e7ee;vertical-align:top}\
th{background:#f4f6fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.state{padding:.1em .45em;border-radius:3px;background:#e8ecf3}\
.failed{background:#fbe1e1}.succeeded{background:#e1f5e6}.running{background:#e3ecfd}\
form.inline{display:inline}button{cursor:pointer}pre{background:#f4f6fa;padding:.6em;overflow:auto}\
.note{color:#5b6578}.ro{background:#fff4d6;padding:.3em .6em}";

/// A whole page: the navigation, then `body`. `active` names the section to highlight.
pub(crate) fn page(config: &Config, title: &str, active: &str, body: &str) -> Html<String> {
    let base = &config.base;
    let mut nav = String::new();
    for (href, name) in [
        ("/", "Queues"),
        ("/tasks", "Tasks"),
        ("/dead-letters", "Dead letters"),
        ("/schedules", "Schedules"),
        ("/workers", "Workers"),
    ] {
        let class = if name == active { " class=\"on\"" } else { "" };
        // Nested, the root is the base itself (axum does not route `{base}/`).
        let href = if href == "/" && !base.is_empty() {
            ""
        } else {
            href
        };
        let _ = write!(nav, "<a href=\"{base}{href}\"{class}>{name}</a>");
    }
    let read_only = if config.read_only {
        "<span class=\"ro\">read-only</span>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · OmniQ</title><style>{STYLE}</style></head><body>\
         <header><strong>OmniQ</strong>{nav}{read_only}</header><main><h1>{title}</h1>{body}</main>\
         </body></html>",
        title = esc(title),
    ))
}

/// A POST button with the anti-forgery token; nothing in read-only mode.
pub(crate) fn action(config: &Config, path: &str, label: &str, fields: &[(&str, &str)]) -> String {
    form(config, path, label, fields, None)
}

/// A POST button for what cannot be undone: the browser asks `question` before sending it.
pub(crate) fn confirmed_action(
    config: &Config,
    path: &str,
    label: &str,
    fields: &[(&str, &str)],
    question: &str,
) -> String {
    form(config, path, label, fields, Some(question))
}

fn form(
    config: &Config,
    path: &str,
    label: &str,
    fields: &[(&str, &str)],
    question: Option<&str>,
) -> String {
    if config.read_only {
        return String::new();
    }
    let mut hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&config.csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(name),
            esc(value)
        );
    }
    // A JSON string is a JavaScript string literal; escaped again for the attribute.
    let confirm = question.map_or_else(String::new, |question| {
        format!(
            " onsubmit=\"return confirm({})\"",
            esc(&serde_json::Value::String(question.to_owned()).to_string())
        )
    });
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}{}\"{confirm}>{hidden}<button type=\"submit\">{}</button></form>",
        esc(&config.base),
        esc(path),
        esc(label)
    )
}

/// A state shown as a tag.
pub(crate) fn state_tag(state: &str) -> String {
    format!("<span class=\"state {0}\">{0}</span>", esc(state))
}
