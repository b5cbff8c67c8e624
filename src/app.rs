//! The commands: `serve`, `routes`, `compile` and `demo`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use crate::config::{Cli, Command, CompileArgs, DescriptorArgs, OpenapiArgs, ServeArgs};
use crate::metrics::Metrics;
use crate::reload::ReloadSource;
use crate::server::{self, Gateway};
use crate::snapshot::Snapshot;
use crate::transcode::JsonOptions;

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log_format, &cli.log);
    match cli.command {
        Command::Serve(args) => runtime()?.block_on(serve(args)),
        Command::Routes(args) => routes(&args),
        Command::Compile(args) => compile(&args),
        Command::Demo(args) => runtime()?.block_on(crate::demo::run(args)),
        Command::Check(args) => runtime()?.block_on(check(&args)),
        Command::Openapi(args) => openapi(&args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn init_logging(format: &str, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log collectors would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Every field at the top level, where log collectors look for them.
        "json" => builder.json().flatten_event(true).try_init(),
        _ => builder.try_init(),
    };
}

/// Everything `serve` builds before it binds: the same checks `check` runs. The trace
/// exporter starts only when `serving`.
async fn prepare(args: &ServeArgs, serving: bool) -> anyhow::Result<(Arc<Gateway>, ReloadSource)> {
    let settings = args.serving.settings()?;
    let trace_config = args.serving.trace_config()?;
    let upstream_options = args.serving.upstream_options();
    let (upstreams, map) = crate::upstream::build_all(
        args.upstream.as_deref(),
        &args.service_upstreams,
        &upstream_options,
    )?;
    let mut sources = args.descriptors.sources();
    if sources.descriptor_sets.is_empty()
        && sources.protos.is_empty()
        && !args.descriptors_from_reflection
    {
        bail!(
            "no descriptors: pass --descriptor-set FILE (a FileDescriptorSet from `buf build` or \
             `protoc --include_imports`), --proto FILE with -I DIR, or \
             --descriptors-from-reflection to read them from the upstreams \
             (env PROTOGATE_DESCRIPTOR_SET, PROTOGATE_PROTO, PROTOGATE_DESCRIPTORS_FROM_REFLECTION)"
        );
    }
    if args.descriptors_from_reflection {
        sources.from_reflection = true;
        sources.fetched_sets = crate::reflection_source::fetch_all(&upstreams)
            .await
            .map_err(|e| anyhow::anyhow!("--descriptors-from-reflection: {e}"))?;
    }
    let source = ReloadSource {
        sources,
        options: args.descriptors.route_options(),
        upstreams: map,
    };
    let snapshot = source.build()?;
    if snapshot.routes.is_empty() {
        tracing::warn!(
            "the descriptors define no google.api.http rules: every REST request will be 404"
        );
    }
    if let (true, Some(broken)) = (settings.validate, snapshot.rules.broken().first()) {
        bail!("--validate: {broken}");
    }
    let metrics = Metrics::new();
    let tracing = crate::trace::start_if_set(trace_config.as_ref().filter(|_| serving), &metrics)?;
    let gateway = Gateway::traced(snapshot, upstreams, settings, metrics, tracing);
    Ok((gateway, source))
}

async fn check(args: &ServeArgs) -> anyhow::Result<()> {
    let (gateway, _) = prepare(args, false).await?;
    args.serving.server_tls()?;
    let snapshot = gateway.snapshot();
    println!(
        "ok: {} routes, {} services",
        snapshot.routes.len(),
        snapshot.services.len()
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (gateway, source) = prepare(&args, true).await?;
    let refresh = args
        .descriptors_from_reflection
        .then_some(args.reflection_interval);
    crate::reload::spawn_triggers_every(gateway.clone(), source, args.watch_descriptors, refresh)?;
    if let Some(admin) = args.serving.admin_listen {
        let listener = TcpListener::bind(admin)
            .await
            .with_context(|| format!("cannot listen on {admin} (--admin-listen)"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "admin endpoints");
        crate::run::log_admin_endpoints(&crate::run::base_url("http", address));
        tokio::spawn(server::serve_admin(
            listener,
            gateway.clone(),
            crate::run::shutdown_signal(),
        ));
    }
    crate::run::until_signal(gateway, args.listen, &args.serving).await
}

fn routes(args: &DescriptorArgs) -> anyhow::Result<()> {
    let snapshot = Snapshot::build(&args.sources(), &args.route_options(), None)?;
    print!("{}", route_listing(&snapshot));
    Ok(())
}

/// The route table as aligned text: method, template, gRPC method, body.
pub fn route_listing(snapshot: &Snapshot) -> String {
    let mut rows: Vec<[String; 4]> = snapshot
        .routes
        .plans()
        .map(|plan| {
            let method = plan.rule.method.to_string();
            let body = match plan.rule.body.as_str() {
                "" => "-".to_string(),
                b => b.to_string(),
            };
            [
                method,
                plan.rule.path.clone(),
                plan.grpc_path.to_string(),
                body,
            ]
        })
        .collect();
    rows.sort();
    rows.insert(
        0,
        ["METHOD", "TEMPLATE", "GRPC METHOD", "BODY"].map(String::from),
    );
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            format!(
                "{:w0$}  {:w1$}  {:w2$}  {}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .collect()
}

/// `protogate openapi`: the document `/openapi.json` would serve for these descriptors.
fn openapi(args: &OpenapiArgs) -> anyhow::Result<()> {
    let descriptors = &args.descriptors;
    let snapshot = Snapshot::build(&descriptors.sources(), &descriptors.route_options(), None)?;
    let json = args.json.options(JsonOptions::default().max_depth);
    let document = crate::openapi::document(&snapshot, &json);
    let text = serde_json::to_string_pretty(&document)? + "\n";
    match &args.output {
        Some(path) => write_atomically(path, text.as_bytes()),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write the document")
        }
    }
}

fn compile(args: &CompileArgs) -> anyhow::Result<()> {
    let set = crate::descriptor::compile(&args.includes, &args.files, args.include_source_info)?;
    write_atomically(&args.output, &set)
}

fn write_atomically(path: &PathBuf, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
