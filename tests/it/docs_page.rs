//! The `/docs` page in a real headless browser (Debian's chromium, driven over the Chrome
//! DevTools Protocol): it loads with no network but the gateway, lists the VPS route, and
//! sending the sample request from its form gets the backend's answer.
//!
//! `.ci/run` installs chromium. Where it is missing the test says so and skips, except under
//! `CI=true`, where it fails.

use std::io::Write;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use protogate::server::Settings;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The chromium binary, or `None` (after saying why) when the test cannot run here.
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
            "SKIPPED: the browser test needs chromium (apt-get install chromium); CI installs \
             it and runs this test"
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
    /// A command's result. A command that met the page between two documents (its first
    /// load still replacing the blank one) is sent again, a bounded number of times.
    async fn call(&mut self, method: &str, params: Value) -> Value {
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

    /// Waits until the page has rendered the document (it sets `data-ready` when done).
    async fn wait_ready(&mut self) {
        let ready = "document.readyState === 'complete' && \
                     document.documentElement.dataset.ready === 'true'";
        bounded(async {
            while self.eval(ready).await != json!(true) {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        })
        .await;
    }

    /// Clicks Send on the page and returns the response status and body it shows.
    async fn send_from_page(&mut self) -> (String, String) {
        let result = self
            .eval(
                r#"(async () => {
                    const body = document.getElementById('response-body');
                    const status = document.getElementById('response-status');
                    delete body.dataset.done;
                    delete status.dataset.status;
                    document.getElementById('send').click();
                    const started = Date.now();
                    while (!(body.dataset.done === 'true' || status.dataset.status === 'error')) {
                        if (Date.now() - started > 15000) throw new Error('no response shown');
                        await new Promise((r) => setTimeout(r, 20));
                    }
                    return { status: status.dataset.status, text: status.textContent,
                             body: body.textContent };
                })()"#,
            )
            .await;
        assert_ne!(result["status"], "error", "the request failed: {result}");
        (
            result["status"].as_str().unwrap().to_string(),
            result["body"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_lists_the_vps_route_and_sends_its_sample_request() {
    let Some(binary) = chromium() else {
        return;
    };
    // The real VPS backend, recording the methods it is called with.
    let pool = protogate::descriptor::load(&protogate::demo::vps_sources()).unwrap();
    let vps = protogate::demo::vps_handler(&pool).unwrap();
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = calls.clone();
    let handler = protogate::demo::backend::handler(move |call| {
        recorded.lock().unwrap().push(call.path.clone());
        vps(call)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(protogate::demo::backend::serve(listener, handler, async {
        let _ = stopped.await;
    }));
    let gw = start_gateway(
        protogate::demo::vps_sources(),
        &backend,
        Settings::default(),
    )
    .await;

    let url = format!("{}/docs", gw.base);
    let browser = Browser::launch(&binary, &url);
    let mut page = browser.page(&url).await;
    page.wait_ready().await;

    // It lists the route, under its service.
    let listed = page
        .eval(
            r#"(() => {
                const link = document.querySelector('[data-route="POST /skvps/locdata"]');
                return link && { text: link.textContent,
                    service: link.closest('[data-service]').dataset.service };
            })()"#,
        )
        .await;
    assert_eq!(listed["text"], "POST/skvps/locdata", "{listed}");
    assert_eq!(listed["service"], "vpresult.LocationService");

    // Choosing it shows the operation, its schemas and a sample body.
    let shown = page
        .eval(
            r#"(() => {
                document.querySelector('[data-route="POST /skvps/locdata"]').click();
                return { route: document.getElementById('op-route').textContent,
                         text: document.getElementById('content').innerText,
                         body: document.getElementById('body').value };
            })()"#,
        )
        .await;
    assert_eq!(shown["route"], "/skvps/locdata");
    let text = shown["text"].as_str().unwrap();
    for needle in [
        "getLocationPose",
        "vpdata.VPData",
        "vpresult.VPService_t",
        "Send",
    ] {
        assert!(
            text.contains(needle),
            "{needle} is not on the page:\n{text}"
        );
    }
    let sample: Value = serde_json::from_str(shown["body"].as_str().unwrap()).unwrap();
    assert!(
        sample["stVPBody"]["stCamera"]["imgData"].is_string(),
        "{sample}"
    );

    // Sending the page's sample request reaches the backend and shows its answer.
    let (status, body) = page.send_from_page().await;
    assert_eq!(status, "200", "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["stVPResult"].is_object(), "{answer}");
    assert_eq!(
        answer["stVPResultTrackingMode"]["eVPStatusTrackingMode"],
        "eLOCALIZED"
    );

    // And so does the real 190 KB sample, pasted into the form.
    let real = std::fs::read_to_string(repo_path("examples/sample.json")).unwrap();
    let set = format!(
        "document.getElementById('body').value = {}; true",
        serde_json::to_string(&real).unwrap()
    );
    assert_eq!(page.eval(&set).await, json!(true));
    let (status, body) = page.send_from_page().await;
    assert_eq!(status, "200", "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["stVPResult"]["u64KeyFrameIndex"]
        .as_str()
        .is_some_and(|n| n != "0"));
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        [
            "/vpresult.LocationService/getLocationPose",
            "/vpresult.LocationService/getLocationPose"
        ]
    );
}
