//! The VPS API end to end: the real sample request through the gateway to a gRPC backend.

use crate::support::*;
use base64::Engine;
use prost_reflect::DynamicMessage;
use protogate::server::Settings;

fn sample() -> Vec<u8> {
    std::fs::read(repo_path("examples/sample.json")).unwrap()
}

/// A backend answering every call with a location whose key frame index is `frame`, and the
/// gateway in front of it.
async fn vps_gateway(pool: &prost_reflect::DescriptorPool, frame: &str) -> (Backend, Gw) {
    let result = serde_json::json!({"stVPResult": {"u64KeyFrameIndex": frame}});
    let reply = encode_json(pool, "vpresult.VPService_t", result);
    let backend = Backend::start(reply_with(reply)).await;
    let sources = protogate::demo::vps_sources();
    let gw = start_gateway(sources, &backend.url, Settings::default()).await;
    (backend, gw)
}

#[tokio::test]
async fn sample_json_reaches_the_backend_exactly_as_encoded() {
    let pool = protogate::descriptor::load(&protogate::demo::vps_sources()).unwrap();
    let (backend, gw) = vps_gateway(&pool, "7").await;

    let resp = send("POST", &format!("{}/skvps/locdata", gw.base), &[], sample()).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["stVPResult"]["u64KeyFrameIndex"], "7");

    let call = backend.only_call();
    assert_eq!(call.path, "/vpresult.LocationService/getLocationPose");
    let desc = pool.get_message_by_name("vpdata.VPData").unwrap();
    let sample_bytes = sample();
    let mut de = serde_json::Deserializer::from_slice(&sample_bytes);
    let expected = DynamicMessage::deserialize(desc.clone(), &mut de).unwrap();
    let received = DynamicMessage::decode(desc, call.message.clone()).unwrap();
    assert_eq!(received, expected, "the backend saw a different message");

    let json: serde_json::Value = serde_json::from_slice(&sample()).unwrap();
    let image_b64 = json["stVPBody"]["stCamera"]["imgData"].as_str().unwrap();
    let image = base64::engine::general_purpose::STANDARD
        .decode(image_b64)
        .unwrap();
    let received_image = received
        .get_field_by_name("stVPBody")
        .and_then(|b| {
            b.as_message()?
                .get_field_by_name("stCamera")
                .map(|c| c.into_owned())
        })
        .and_then(|c| {
            c.as_message()?
                .get_field_by_name("imgData")
                .map(|d| d.into_owned())
        })
        .unwrap();
    assert_eq!(
        received_image.as_bytes().unwrap().as_ref(),
        image.as_slice()
    );
    assert!(image.len() > 100_000, "the sample carries a real image");
}

/// The sample as binary protobuf, over REST (`application/x-protobuf`) and over Connect
/// (`application/proto`), reaches the backend byte for byte as the client sent it: a body this
/// large goes upstream from the buffer it arrived in, in pieces of the frame.
#[tokio::test]
async fn the_sample_as_binary_protobuf_reaches_the_backend_byte_for_byte() {
    let pool = protogate::descriptor::load(&protogate::demo::vps_sources()).unwrap();
    let desc = pool.get_message_by_name("vpdata.VPData").unwrap();
    let sample_bytes = sample();
    let mut de = serde_json::Deserializer::from_slice(&sample_bytes);
    let wire = prost::Message::encode_to_vec(&DynamicMessage::deserialize(desc, &mut de).unwrap());
    assert!(wire.len() > 100_000, "{} bytes", wire.len());
    let (backend, gw) = vps_gateway(&pool, "7").await;

    let rest = format!("{}/skvps/locdata", gw.base);
    let connect = format!("{}/vpresult.LocationService/getLocationPose", gw.base);
    for (url, content_type) in [
        (&rest, "application/x-protobuf"),
        (&connect, "application/proto"),
    ] {
        let headers = [
            ("content-type", content_type),
            ("connect-protocol-version", "1"),
        ];
        let resp = send("POST", url, &headers, wire.clone()).await;
        assert_eq!(resp.status, 200, "{content_type}: {:?}", resp.body);
    }
    let calls = backend.calls();
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(call.path, "/vpresult.LocationService/getLocationPose");
        assert!(call.message == wire, "the backend saw other bytes");
    }
}

#[tokio::test]
async fn the_demo_backend_answers_the_sample_through_the_gateway() {
    let pool = protogate::descriptor::load(&protogate::demo::vps_sources()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handler = protogate::demo::vps_handler(&pool).unwrap();
    tokio::spawn(protogate::demo::backend::serve(
        listener,
        handler,
        std::future::pending(),
    ));
    let gw = start_gateway(protogate::demo::vps_sources(), &url, Settings::default()).await;

    let resp = send("POST", &format!("{}/skvps/locdata", gw.base), &[], sample()).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let body = resp.json();
    assert_eq!(body["stVPResult"]["u64Timestamp"], "1630564103461000000");
    assert_eq!(
        body["stVPResultTrackingMode"]["eVPStatusTrackingMode"],
        "eLOCALIZED"
    );
    let qw = body["stVPResult"]["stOrientation"]["f32qW"]
        .as_f64()
        .unwrap();
    assert!((qw - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{qw}");

    let resp = post_json(
        &format!("{}/skvps/locdata", gw.base),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["code"], 3);
    assert!(resp.json()["message"].as_str().unwrap().contains("imgData"));
}

/// The VPS request without base64: curl's own `-F` upload of the metadata as the `*` JSON part
/// and the camera frame as a raw file part is answered exactly as the JSON sample, and the
/// backend receives the same message.
#[tokio::test]
async fn a_curl_multipart_upload_is_answered_as_the_json_sample() {
    let pool = protogate::descriptor::load(&protogate::demo::vps_sources()).unwrap();
    let (backend, gw) = vps_gateway(&pool, "9").await;
    let url = format!("{}/skvps/locdata", gw.base);
    let json = send("POST", &url, &[], sample()).await;
    assert_eq!(json.status, 200);

    let mut meta: serde_json::Value = serde_json::from_slice(&sample()).unwrap();
    let image = meta["stVPBody"]["stCamera"]
        .as_object_mut()
        .unwrap()
        .remove("imgData")
        .unwrap();
    let frame = base64::engine::general_purpose::STANDARD
        .decode(image.as_str().unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("meta.json"), meta.to_string()).unwrap();
    std::fs::write(dir.path().join("frame.png"), &frame).unwrap();
    let output = tokio::process::Command::new("curl")
        .current_dir(dir.path())
        .args(["-s", "-S", "-F", "*=@meta.json;type=application/json"])
        .args(["-F", "stVPBody.stCamera.imgData=@frame.png", &url])
        .kill_on_drop(true)
        .output();
    let output = bounded(output).await.expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&json.body),
        "the same answer"
    );
    let calls = backend.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].message, calls[1].message, "the same message");
}
