//! A headless chromium (Debian's) driven over the Chrome DevTools Protocol, for the tests that
//! need a real browser: the `/docs` page (`docs_page.rs`) and the browser clients
//! (`clients.rs`).
//!
//! `.ci/run` installs chromium. Where it is missing the tests say so and skip, except under
//! `CI=true`, where they fail.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{bounded, get, TIMEOUT};

/// The chromium binary, or `None` (after saying why) when a browser test cannot run here.
pub(crate) fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var("CHROMIUM").ok(),
        Some("chromium".into()),
        Some("chromium-browser".into()),
    ];
    let found = candidates.into_iter().flatten().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is missing under CI: .ci/run installs it (apt-get install chromium)"
        );
        // Straight to the terminal: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the browser tests need chromium (apt-get install chromium); CI installs \
             it and runs them"
        );
    }
    found.map(PathBuf::from)
}

/// A headless chromium, killed when dropped.
pub(crate) struct Browser {
    child: Child,
    devtools: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromium on `url` with DevTools on a loopback port it reports on stderr.
    pub(crate) fn launch(binary: &PathBuf, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ws) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(ws.trim().to_string());
                }
            }
        });
        let mut browser = Browser {
            child,
            devtools: String::new(),
            _profile: profile,
        };
        let ws = rx
            .recv_timeout(TIMEOUT)
            .expect("chromium reported its DevTools address");
        let authority = ws
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("a ws:// address");
        browser.devtools = format!("http://{authority}");
        browser
    }

    /// The DevTools connection of the page showing `url`.
    pub(crate) async fn page(&self, url: &str) -> Cdp {
        let targets = get(&format!("{}/json/list", self.devtools)).await.json();
        let target = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
            .unwrap_or_else(|| panic!("no page for {url} in {targets}"))
            .clone();
        let ws = target["webSocketDebuggerUrl"].as_str().unwrap();
        let (socket, _) = bounded(tokio_tungstenite::connect_async(ws)).await.unwrap();
        Cdp { socket, next: 0 }
    }
}

/// A minimal Chrome DevTools Protocol client: commands and their results, events skipped.
pub(crate) struct Cdp {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Cdp {
    /// Sends a command and returns its result. A command that meets a page in the middle of
    /// navigating ("context was destroyed") is sent again, a bounded number of times.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        for _ in 0..200 {
            match self.try_call(method, params.clone()).await {
                Ok(result) => return result,
                Err(reply) if reply.to_string().contains("context was destroyed") => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                Err(reply) => panic!("{method}: {reply}"),
            }
        }
        panic!("{method}: the page never settled");
    }

    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let command = json!({ "id": id, "method": method, "params": params });
        bounded(self.socket.send(Message::text(command.to_string())))
            .await
            .unwrap();
        loop {
            let message = bounded(self.socket.next())
                .await
                .expect("the DevTools connection closed")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                return match reply.get("error") {
                    None => Ok(reply["result"].clone()),
                    Some(_) => Err(reply),
                };
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({
            "expression": expression,
            "awaitPromise": true,
            "returnByValue": true,
        });
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("the page threw: {details}\nevaluating {expression}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until the page has loaded and set `data-ready` on its root element.
    pub(crate) async fn wait_ready(&mut self) {
        let ready = "document.readyState === 'complete' && \
                     document.documentElement?.dataset.ready === 'true'";
        bounded(async {
            while self.eval(ready).await != json!(true) {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        })
        .await;
    }
}
