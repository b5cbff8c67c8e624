//! The helper of the load benchmark (`bench/load.sh`), a bench target so that it builds with
//! the release profile and compiles with every `cargo clippy --all-targets`:
//!
//! ```text
//! load_backend serve 127.0.0.1:50051   # a tonic gRPC backend answering canned replies
//! load_backend frames DIR              # the requests of the load cases, framed for h2load
//! ```
//!
//! `serve` answers `testapi.v1.Library/CreateBook`, `testapi.v1.Library/ListBooks` and
//! `vpresult.LocationService/getLocationPose` with fixed messages (the last is what the built-in
//! VPS backend answers to the sample), so the backend's cost per call is tonic's alone and the
//! same for direct gRPC and for the gateway. It serves until killed.
//!
//! `frames` writes, for each load case, `DIR/CASE.grpc` (the 5-byte gRPC header and the message
//! the gateway builds from that request), `DIR/CASE.rpc` (the gRPC path) and `DIR/CASE.http`
//! (`METHOD TARGET BODY-FILE`, the REST request), so both sides of the comparison send the same
//! message.
//!
//! With no command (as `cargo bench` and `cargo test --benches` run it) it does nothing.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use protogate::demo::backend::{self, Call, Reply};
use tokio::net::TcpListener;
use tonic::Status;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", addr] => serve(addr),
        ["frames", dir] => frames(Path::new(dir)),
        _ => {
            eprintln!("load_backend: nothing to do (commands: `serve ADDR`, `frames DIR`)");
            Ok(())
        }
    }
}

fn serve(addr: &str) -> anyhow::Result<()> {
    let snapshot = common::snapshot()?;
    let replies: Arc<HashMap<String, bytes::Bytes>> =
        Arc::new(common::canned_replies(&snapshot)?.into_iter().collect());
    let handler = backend::handler(move |call: Call| {
        let reply = replies.get(&call.path).cloned();
        async move {
            let message = reply.ok_or_else(|| Status::unimplemented(call.path))?;
            Ok(Reply {
                message,
                metadata: Default::default(),
            })
        }
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!("listening on {}", listener.local_addr()?);
        backend::serve(listener, handler, std::future::pending()).await;
        Ok(())
    })
}

fn frames(dir: &Path) -> anyhow::Result<()> {
    let snapshot = common::snapshot()?;
    std::fs::create_dir_all(dir)?;
    for case in common::LOAD_CASES {
        let resolved = common::Resolved::new(&snapshot, case.clone())?;
        let frame = resolved.frame(&snapshot)?;
        let grpc_path = resolved.plan.grpc_path.path();
        let body = case
            .body_file
            .map(|f| common::repo_path(f).display().to_string())
            .unwrap_or_else(|| "-".into());
        let write = |ext: &str, bytes: &[u8]| {
            let path = dir.join(format!("{}.{ext}", case.name));
            std::fs::write(&path, bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
        };
        write("grpc", &frame)?;
        write("rpc", grpc_path.as_bytes())?;
        write(
            "http",
            format!("{} {} {body}", case.method, case.target).as_bytes(),
        )?;
        println!("{} {} bytes -> {grpc_path}", case.name, frame.len());
    }
    Ok(())
}
