//! The `/docs` page in a real headless browser (Debian's chromium, driven over the Chrome
//! DevTools Protocol): it loads with no network but the gateway, lists the VPS route, and
//! sending the sample request from its form gets the backend's answer.
//!
//! `.ci/run` installs chromium. Where it is missing the test says so and skips, except under
//! `CI=true`, where it fails (`support::browser`).

use std::sync::{Arc, Mutex};

use crate::support::browser::{chromium, Browser, Cdp};
use crate::support::*;
use protogate::server::Settings;
use serde_json::{json, Value};

/// Clicks Send on the page and returns the response status and body it shows.
async fn send_from_page(page: &mut Cdp) -> (String, String) {
    let result = page
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
    let (status, body) = send_from_page(&mut page).await;
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
    let (status, body) = send_from_page(&mut page).await;
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
