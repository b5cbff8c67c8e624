//! The VPS gRPC backend on its own (the role of the original `vps-grpc-server`), for running
//! the gateway against it with `protogate serve`:
//!
//! ```text
//! cargo run --example vps_backend -- 127.0.0.1:50051
//! cargo run -- serve --descriptor-set descriptors/vps.binpb --upstream http://127.0.0.1:50051
//! ```

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_string());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "VPS backend serving gRPC (h2c) on {}",
        listener.local_addr()?
    );
    protogate::demo::serve_backend(listener).await
}
