//! Just enough of the Chrome DevTools Protocol to drive headless Chromium through pages:
//! navigate, evaluate, click with the mouse, screenshot, and collect the page's errors.
//!
//! Every wait is on a message from the browser (a load event, an answer, a promise the
//! page resolves), bounded by [`WAIT`](crate::common::WAIT).

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::WAIT;

/// Where Chromium is looked for, in order; `OMNIQ_CHROMIUM` names another.
const BINARIES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The browser's executable, if this machine has one.
pub(crate) fn find() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("OMNIQ_CHROMIUM") {
        return Some(path.into());
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .flat_map(|dir| BINARIES.iter().map(move |name| dir.join(name)))
        .find(|path| path.is_file())
}

/// One headless Chromium with one page open, attached over the browser's WebSocket.
pub(crate) struct Browser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    loads: u64,
    unanswered_dialog: bool,
    /// Whether a page's `confirm()` is accepted (OK) or dismissed (Cancel).
    pub(crate) accept_dialogs: bool,
    /// The messages of the dialogs the pages opened, in order.
    pub(crate) dialogs: Vec<String>,
    /// Uncaught exceptions and errors logged by the pages, in order.
    pub(crate) problems: Vec<String>,
}

impl Browser {
    /// Starts `binary` headless with a fresh profile and opens a blank page.
    pub(crate) async fn launch(binary: &Path) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless",
                // The tests run as root in CI, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;

        // Chromium says where its DevTools listen on stderr; the rest of stderr is drained
        // for as long as it runs, so it never blocks on a full pipe.
        let stderr = child.stderr.take().context("no stderr")?;
        let (found, address) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut found = Some(found);
            let mut said = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                } else if found.is_some() && said.len() < 50 {
                    said.push(line);
                }
            }
            if found.is_some() {
                eprintln!("chromium exited before listening:\n{}", said.join("\n"));
            }
        });
        let url = tokio::time::timeout(WAIT, address)
            .await
            .context("Chromium did not open its DevTools port in time")?
            .context("Chromium exited before opening its DevTools port")?;
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("cannot connect to {url}"))?;

        let mut browser = Self {
            child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
            loads: 0,
            unanswered_dialog: false,
            accept_dialogs: false,
            dialogs: Vec::new(),
            problems: Vec::new(),
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .context("no session id")?
            .to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await?;
        }
        // The blank page's own load must be over before the first navigation counts loads:
        // its event, if late, would pass for the next page's.
        let blank = "new Promise(resolve => document.readyState === 'complete' \
                     ? resolve(true) : addEventListener('load', () => resolve(true)))";
        browser.eval(blank).await?;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
        Ok(browser)
    }

    /// Sends one command (to the page once attached) and returns its result; events that
    /// arrive meanwhile are recorded.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = Value::String(self.session.clone());
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .with_context(|| format!("{method}: cannot send"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let message = self
                .receive(deadline)
                .await
                .with_context(|| format!("waiting for the answer to {method}"))?;
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(message["result"].clone());
            }
            self.observe(&message).await?;
        }
    }

    async fn receive(&mut self, deadline: Instant) -> anyhow::Result<Value> {
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .context("the browser said nothing within the bound")?
                .context("the browser closed its socket")??;
            if let Message::Text(text) = frame {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// Records an event; a dialog is answered at once, since the page waits on it.
    async fn observe(&mut self, event: &Value) -> anyhow::Result<()> {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Page.loadEventFired") => self.loads += 1,
            Some("Page.javascriptDialogOpening") => {
                self.dialogs
                    .push(params["message"].as_str().unwrap_or_default().to_owned());
                self.unanswered_dialog = true;
            }
            Some("Runtime.exceptionThrown") => self
                .problems
                .push(format!("uncaught: {}", params["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .problems
                .push(format!("console.error: {}", params["args"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let text = params["entry"]["text"].as_str().unwrap_or_default();
                let url = params["entry"]["url"].as_str().unwrap_or_default();
                // Browsers ask for a favicon on their own; the dashboard has none.
                if !url.ends_with("/favicon.ico") {
                    self.problems.push(format!("{text} ({url})"));
                }
            }
            _ => {}
        }
        if std::mem::take(&mut self.unanswered_dialog) {
            // Its answer carries an id no call waits for, so it is passed over.
            self.next_id += 1;
            let answer = json!({
                "id": self.next_id,
                "sessionId": self.session,
                "method": "Page.handleJavaScriptDialog",
                "params": { "accept": self.accept_dialogs },
            });
            self.socket.send(Message::text(answer.to_string())).await?;
        }
        Ok(())
    }

    /// Waits for the page to finish loading a document after `before` loads.
    async fn loaded_after(&mut self, before: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.loads <= before {
            let message = self.receive(deadline).await.context("waiting for a load")?;
            self.observe(&message).await?;
        }
        Ok(())
    }

    /// Waits for the pages to have opened more than `before` dialogs.
    pub(crate) async fn dialog_after(&mut self, before: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.dialogs.len() <= before {
            let message = self
                .receive(deadline)
                .await
                .context("waiting for a dialog")?;
            self.observe(&message).await?;
        }
        Ok(())
    }

    /// Loads `url` and waits for its load event.
    pub(crate) async fn open(&mut self, url: &str) -> anyhow::Result<()> {
        let before = self.loads;
        let navigated = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = navigated["errorText"].as_str() {
            bail!("{url}: {error}");
        }
        self.loaded_after(before).await
    }

    /// Evaluates `expression` in the page, awaiting it if it is a promise; its JSON value.
    pub(crate) async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// The text a reader sees on the page.
    pub(crate) async fn text(&mut self) -> anyhow::Result<String> {
        Ok(self
            .eval("document.body.innerText")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// How many elements match `selector`.
    pub(crate) async fn count(&mut self, selector: &str) -> anyhow::Result<u64> {
        let expression = format!("document.querySelectorAll({}).length", json!(selector));
        self.eval(&expression)
            .await?
            .as_u64()
            .context("not a count")
    }

    /// Clicks the element `selector` names and waits for the page it leads to.
    pub(crate) async fn click_and_wait(&mut self, selector: &str) -> anyhow::Result<()> {
        let before = self.loads;
        self.click(selector).await?;
        self.loaded_after(before).await
    }

    /// Clicks the middle of the element `selector` names with the mouse, as a person would.
    pub(crate) async fn click(&mut self, selector: &str) -> anyhow::Result<()> {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; \
             e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        );
        let point = self.eval(&expression).await?;
        let (Some(x), Some(y)) = (point[0].as_f64(), point[1].as_f64()) else {
            bail!("nothing on the page matches {selector}");
        };
        for (kind, button) in [
            ("mouseMoved", "none"),
            ("mousePressed", "left"),
            ("mouseReleased", "left"),
        ] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": button, "clickCount": 1 }),
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until the text of the element `selector` names reads `want`, watching the page
    /// change rather than asking again and again.
    pub(crate) async fn wait_for_text(&mut self, selector: &str, want: &str) -> anyhow::Result<()> {
        let expression = format!(
            "new Promise(resolve => {{ const e = document.querySelector({sel}); \
             if (!e) {{ resolve(false); return; }} \
             const done = () => {{ if (e.textContent.trim() === {want}) {{ resolve(true); return true; }} return false; }}; \
             if (!done()) new MutationObserver(done).observe(e, {{ subtree: true, childList: true, characterData: true }}); }})",
            sel = json!(selector),
            want = json!(want),
        );
        let seen = tokio::time::timeout(WAIT, self.eval(&expression))
            .await
            .with_context(|| format!("{selector} never read {want:?}"))??;
        if seen != Value::Bool(true) {
            bail!("nothing on the page matches {selector}");
        }
        Ok(())
    }

    /// Writes a PNG of the page as shown to `path`.
    pub(crate) async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("no image")?)?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Closes the browser and waits for it to exit.
    pub(crate) async fn close(mut self) -> anyhow::Result<()> {
        self.session.clear();
        // The browser may close the socket before it answers.
        let _ = self.call("Browser.close", json!({})).await;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("Chromium did not exit")??;
        Ok(())
    }
}
