//! The built-in VPS demo: a Visual Positioning Service backend that answers
//! `vpresult.LocationService` calls with a pose derived from the request, and `protogate demo`,
//! which runs it behind the gateway so that `POST /skvps/locdata` answers on a fresh machine.

pub mod backend;

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tokio::net::TcpListener;
use tonic::Status;

use crate::config::DemoArgs;
use crate::descriptor::Sources;
use crate::server::Gateway;
use crate::snapshot::Snapshot;

/// The VPS API's descriptor set, compiled from `schema/` by `protogate compile`.
pub const VPS_DESCRIPTORS: &[u8] = include_bytes!("../descriptors/vps.binpb");

/// Descriptor sources holding only the built-in VPS set.
pub fn vps_sources() -> Sources {
    Sources {
        embedded_sets: vec![("descriptors/vps.binpb", VPS_DESCRIPTORS)],
        ..Sources::default()
    }
}

/// Runs the VPS backend on a loopback port and the gateway in front of it.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let pool = crate::descriptor::load(&vps_sources())?;
    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_url = format!("http://{}", backend.local_addr()?);
    tokio::spawn(backend::serve(
        backend,
        vps_handler(&pool)?,
        std::future::pending(),
    ));
    let settings = args.serving.settings()?;
    let (upstreams, map) =
        crate::upstream::build_all(Some(&backend_url), &[], &args.serving.upstream_options())?;
    let snapshot = Snapshot::build(&vps_sources(), &Default::default(), Some(&map))?;
    let metrics = crate::metrics::Metrics::new();
    let tracing = crate::trace::start_if_set(args.serving.trace_config()?.as_ref(), &metrics)?;
    let gateway = Gateway::traced(snapshot, upstreams, settings, metrics, tracing);
    tracing::info!(backend = %backend_url, "VPS demo backend started; try: curl -d @examples/sample.json http://{}/skvps/locdata", args.listen);
    crate::run::until_signal(gateway, args.listen, &args.serving).await
}

/// Serves the VPS backend alone on `listener` (the `vps_backend` example).
pub async fn serve_backend(listener: TcpListener) -> anyhow::Result<()> {
    let pool = crate::descriptor::load(&vps_sources())?;
    backend::serve(listener, vps_handler(&pool)?, std::future::pending()).await;
    Ok(())
}

/// The message types the VPS backend reads and writes.
#[derive(Clone)]
struct VpsTypes {
    request: MessageDescriptor,
    response: MessageDescriptor,
    float_value: MessageDescriptor,
}

fn message(pool: &DescriptorPool, name: &str) -> anyhow::Result<MessageDescriptor> {
    pool.get_message_by_name(name)
        .ok_or_else(|| anyhow::anyhow!("the VPS descriptors lack {name}"))
}

/// A handler for `vpresult.LocationService`.
pub fn vps_handler(pool: &DescriptorPool) -> anyhow::Result<backend::Handler> {
    let types = Arc::new(VpsTypes {
        request: message(pool, "vpdata.VPData")?,
        response: message(pool, "vpresult.VPService_t")?,
        float_value: message(pool, "google.protobuf.FloatValue")?,
    });
    Ok(backend::handler(move |call: backend::Call| {
        let types = types.clone();
        async move {
            let request = DynamicMessage::decode(types.request.clone(), call.message)
                .map_err(|e| Status::invalid_argument(format!("not a vpdata.VPData: {e}")))?;
            let message = match call.path.as_str() {
                "/vpresult.LocationService/getLocationPose" => locate(&types, &request)?,
                "/vpresult.LocationService/getLocationInfo" => confidence(&types),
                other => return Err(Status::unimplemented(format!("unknown method {other}"))),
            };
            Ok(backend::Reply {
                message: Bytes::from(message.encode_to_vec()),
                metadata: Default::default(),
            })
        }
    }))
}

/// Reads a nested field by proto names, `None` when a step is missing.
fn get(message: &DynamicMessage, path: &[&str]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let value = message.get_field_by_name(first)?.into_owned();
    match rest.is_empty() {
        true => Some(value),
        false => get(value.as_message()?, rest),
    }
}

/// The pose answer: the frame's timestamp, a location from the last known one, and the
/// orientation of the last dead-reckoning pose; an empty image is an invalid argument.
fn locate(types: &VpsTypes, request: &DynamicMessage) -> Result<DynamicMessage, Status> {
    let image = get(request, &["stVPBody", "stCamera", "imgData"])
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument(
            "stVPBody.stCamera.imgData is empty: a camera frame is required",
        ));
    }
    let timestamp = get(request, &["stVPHeader", "u64TSSend"])
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let orientation = last_dr_orientation(request);
    let mut response = DynamicMessage::new(types.response.clone());
    let meta = response_meta(&mut response)?;
    meta.set_field_by_name("u64KeyFrameIndex", Value::U64(image.len() as u64));
    meta.set_field_by_name("u64Timestamp", Value::U64(timestamp));
    set_location(meta, request);
    if let Some(o) = &orientation {
        set_floats(
            meta,
            "stOrientation",
            &[
                ("f32qX", o[0]),
                ("f32qY", o[1]),
                ("f32qZ", o[2]),
                ("f32qW", o[3]),
            ],
        );
    }
    set_tracking(
        &mut response,
        timestamp,
        orientation.unwrap_or([0.0, 0.0, 0.0, 1.0]),
    );
    Ok(response)
}

fn response_meta(response: &mut DynamicMessage) -> Result<&mut DynamicMessage, Status> {
    match response.get_field_by_name_mut("stVPResult") {
        Some(Value::Message(m)) => Ok(m),
        _ => Err(Status::internal("VPService_t has no stVPResult message")),
    }
}

fn last_dr_orientation(request: &DynamicMessage) -> Option<[f32; 4]> {
    let sets = get(request, &["stVPBody", "stState", "stFramePoseInfoSet"])?;
    let last_set = sets.as_list()?.last()?.as_message()?.clone();
    let poses = last_set
        .get_field_by_name("stLastDRPoseInfoArray")?
        .into_owned();
    let pose = get(poses.as_list()?.last()?.as_message()?, &["stPose"])?;
    let pose = pose.as_message()?;
    let f = |name: &str| {
        pose.get_field_by_name(name)
            .and_then(|v| v.as_f32())
            .unwrap_or(0.0)
    };
    Some([f("f32qX"), f("f32qY"), f("f32qZ"), f("f32qW")])
}

fn set_location(meta: &mut DynamicMessage, request: &DynamicMessage) {
    let last = get(request, &["stVPHeader", "arf64LastLoc"]);
    let coords: Vec<f64> = last
        .as_ref()
        .and_then(Value::as_list)
        .map(|l| l.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let at = |i: usize| coords.get(i).copied().unwrap_or(0.0);
    if let Some(Value::Message(loc)) = meta.get_field_by_name_mut("stAvgLocation") {
        loc.set_field_by_name("f64X", Value::F64(at(0)));
        loc.set_field_by_name("f64Y", Value::F64(at(1)));
        loc.set_field_by_name("f64Z", Value::F64(at(2)));
    }
}

fn set_floats(message: &mut DynamicMessage, field: &str, values: &[(&str, f32)]) {
    if let Some(Value::Message(m)) = message.get_field_by_name_mut(field) {
        for (name, v) in values {
            m.set_field_by_name(name, Value::F32(*v));
        }
    }
}

fn set_tracking(response: &mut DynamicMessage, timestamp: u64, q: [f32; 4]) {
    let Some(Value::Message(tracking)) = response.get_field_by_name_mut("stVPResultTrackingMode")
    else {
        return;
    };
    tracking.set_field_by_name("eVPStatusTrackingMode", Value::EnumNumber(2));
    if let Some(Value::Message(info)) = tracking.get_field_by_name_mut("stVPSPoseInfo") {
        info.set_field_by_name("u64Timestamp", Value::U64(timestamp));
        info.set_field_by_name("bPoseFlag", Value::Bool(true));
        info.set_field_by_name("f32PoseConfidence", Value::F32(0.87));
        set_floats(
            info,
            "stPose",
            &[
                ("f32qX", q[0]),
                ("f32qY", q[1]),
                ("f32qZ", q[2]),
                ("f32qW", q[3]),
            ],
        );
    }
}

fn confidence(types: &VpsTypes) -> DynamicMessage {
    let mut value = DynamicMessage::new(types.float_value.clone());
    value.set_field_by_name("value", Value::F32(0.87));
    value
}
