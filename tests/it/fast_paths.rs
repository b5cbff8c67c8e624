//! The fast paths, the direct JSON-to-wire encoder and wire-to-JSON renderer, on the
//! benchmark's bodies: the
//! small POST and the VPS sample take the encoder, every reply takes the renderer, and both
//! give what the reference paths give. (The `json_request` and `json_response` fuzz targets
//! compare the paths on every input they try.)

#[path = "../../benches/common/mod.rs"]
mod common;

use prost::Message;
use prost_reflect::DynamicMessage;
use protogate::grpc::frame;
use protogate::transcode::{
    fast_request, message_to_json, render_response, request_message, JsonOptions, RenderedBody,
};

fn rendered(message: &DynamicMessage) -> String {
    let mut out = Vec::new();
    message_to_json::write_message(&mut out, message, &JsonOptions::default()).expect("renders");
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn the_benchmark_bodies_take_the_fast_path_and_match_the_reference() {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    for case in [common::SMALL_POST, common::VPS, common::VPS_ECHO] {
        let resolved = common::Resolved::new(&snapshot, case).expect("case resolves");
        let input = resolved.input();
        let fast = fast_request(&resolved.plan, &snapshot.schemas, &options, &input)
            .expect("accepted")
            .unwrap_or_else(|| panic!("{}: the fast path declined", resolved.case.name))
            .to_bytes();
        let reference = request_message(&resolved.plan, &options, input).expect("accepted");

        let input_type = resolved.plan.input.clone();
        let got = DynamicMessage::decode(input_type.clone(), fast.slice(frame::HEADER_LEN..))
            .expect("the fast frame decodes");
        let expected = DynamicMessage::decode(input_type, reference.encode_to_vec().as_slice())
            .expect("the reference message decodes");
        assert_eq!(
            rendered(&got),
            rendered(&expected),
            "{}",
            resolved.case.name
        );
        assert_eq!(
            fast.len() - frame::HEADER_LEN,
            reference.encoded_len(),
            "{}: same size",
            resolved.case.name
        );
    }
}

/// A binary protobuf body goes into the frame as the client sent it, with the path
/// variables after it: the same message the reference path builds. A body that does not
/// decode is left to the reference path, which refuses it.
#[test]
fn protobuf_bodies_pass_as_sent_and_match_the_reference() {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    // The small POST also with a title long enough to share its body: the field's key and
    // length before the body, the path variable after it, each a piece of the frame.
    for (case, long_title) in [
        (common::SMALL_POST, false),
        (common::SMALL_POST, true),
        (common::VPS, false),
    ] {
        let resolved = common::Resolved::new(&snapshot, case).expect("case resolves");
        let mut from_json = request_message(&resolved.plan, &options, resolved.input()).unwrap();
        if long_title {
            let book = from_json
                .get_field_by_name_mut("book")
                .expect("a book field");
            let title = prost_reflect::Value::String("t".repeat(2 * frame::SHARE_FROM));
            let book = book.as_message_mut().expect("a message");
            book.set_field_by_name("title", title);
        }
        let body = match &resolved.plan.body {
            protogate::route::BodyPlan::Field(field) => from_json
                .get_field(field.leaf())
                .as_message()
                .expect("a message field")
                .encode_to_vec(),
            _ => from_json.encode_to_vec(),
        };
        let body = bytes::Bytes::from(body);
        let input = protogate::transcode::RequestInput {
            body: &body,
            content_type: Some("application/x-protobuf"),
            ..resolved.input()
        };
        let outgoing = fast_request(&resolved.plan, &snapshot.schemas, &options, &input)
            .expect("accepted")
            .unwrap_or_else(|| panic!("{}: the fast path declined", resolved.case.name));
        // A large body is sent from the buffer it came in, a piece of the frame of its own.
        let mut pieces = outgoing.clone();
        let shared = std::iter::from_fn(|| pieces.next_piece())
            .any(|piece| piece.as_ptr() == body.as_ptr() && piece.len() == body.len());
        assert_eq!(
            shared,
            body.len() >= frame::SHARE_FROM,
            "{}: a body of {} bytes is shared exactly when it is large",
            resolved.case.name,
            body.len()
        );
        let fast = outgoing.to_bytes();
        assert!(
            fast.windows(body.len()).any(|w| w == &body[..]),
            "{}: the body is in the frame as sent",
            resolved.case.name
        );
        let reference = request_message(&resolved.plan, &options, input).expect("accepted");
        let input_type = resolved.plan.input.clone();
        let got = DynamicMessage::decode(input_type, fast.slice(frame::HEADER_LEN..)).unwrap();
        assert_eq!(
            rendered(&got),
            rendered(&reference),
            "{}",
            resolved.case.name
        );
        assert_eq!(
            rendered(&reference),
            rendered(&from_json),
            "{}",
            resolved.case.name
        );

        let broken = bytes::Bytes::from_static(b"\x0a\xff\xff");
        let input = protogate::transcode::RequestInput {
            body: &broken,
            ..input
        };
        let declined = fast_request(&resolved.plan, &snapshot.schemas, &options, &input);
        assert!(matches!(declined, Ok(None)), "{}", resolved.case.name);
        let refused = request_message(&resolved.plan, &options, input).unwrap_err();
        assert!(
            refused.message.contains("invalid protobuf body"),
            "{}",
            refused.message
        );
    }
}

#[test]
fn a_get_with_a_query_takes_the_direct_encoder_and_matches_the_reference() {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    let get = common::Resolved::new(&snapshot, common::GET_QUERY).expect("case resolves");
    let fast = fast_request(&get.plan, &snapshot.schemas, &options, &get.input())
        .expect("no error")
        .expect("the path variable and the query are written directly")
        .to_bytes();
    let reference = request_message(&get.plan, &options, get.input()).expect("accepted");
    let input_type = get.plan.input.clone();
    let got = DynamicMessage::decode(input_type, fast.slice(frame::HEADER_LEN..)).unwrap();
    assert_eq!(rendered(&got), rendered(&reference));
    assert!(
        rendered(&got).contains("\"tags\":[\"sf\",\"classic\"]"),
        "{}",
        rendered(&got)
    );

    // What the direct encoder does not take keeps the reference path: an unknown key, a
    // singular field given twice, a value that does not parse.
    for query in [
        "page_size=20&no_such_field=1",
        "page_size=20&page_size=30",
        "page_size=twenty",
    ] {
        let input = protogate::transcode::RequestInput {
            query: Some(query),
            ..get.input()
        };
        let declined = fast_request(&get.plan, &snapshot.schemas, &options, &input);
        assert!(matches!(declined, Ok(None)), "{query}");
    }
}

#[test]
fn the_benchmark_replies_take_the_fast_renderer_and_match_the_reference() {
    let snapshot = common::snapshot().expect("bench descriptors");
    let encode = |name, file| common::encode_json(&snapshot, name, file).expect("reply encodes");
    let echo = |case| {
        let resolved = common::Resolved::new(&snapshot, case).expect("case resolves");
        common::payload(&resolved.frame(&snapshot).expect("case transcodes"))
    };
    let replies = [
        (
            common::SMALL_POST,
            encode("testapi.v1.Book", "benches/data/book_reply.json"),
        ),
        (
            common::GET_QUERY,
            encode(
                "testapi.v1.ListBooksResponse",
                "benches/data/list_reply.json",
            ),
        ),
        (
            common::VPS,
            common::vps_reply(&snapshot).expect("VPS reply"),
        ),
        (common::VPS_ECHO, echo(common::VPS_ECHO)),
    ];
    for flags in [JsonOptions::default(), every_output_flag()] {
        for (case, payload) in &replies {
            let resolved = common::Resolved::new(&snapshot, case.clone()).expect("resolves");
            let mut fast = Vec::new();
            snapshot
                .schemas
                .render_fast(&resolved.plan.output, payload, &flags, &mut fast)
                .unwrap_or_else(|_| panic!("{}: the fast renderer declined", case.name));
            let reference_flags = JsonOptions {
                fast_paths: false,
                ..flags.clone()
            };
            let rendered = render_response(
                &resolved.plan,
                &snapshot.schemas,
                &reference_flags,
                payload.clone(),
            );
            let RenderedBody::Json(reference) = rendered.expect("renders") else {
                panic!("{}: not JSON", case.name);
            };
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&reference),
                "{}",
                case.name
            );
        }
    }
}

fn every_output_flag() -> JsonOptions {
    JsonOptions {
        use_proto_names: true,
        emit_unpopulated: false,
        enums_as_ints: true,
        int64_as_numbers: true,
        ..JsonOptions::default()
    }
}

/// `Timestamp` and `Duration` are read straight from the wire by the fast renderer: every
/// encoding of them renders as the reference path renders it, and one the reference path
/// refuses (out of range) is refused the same way.
#[test]
fn timestamps_and_durations_render_as_the_reference_renders_them() {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let snapshot = common::snapshot().expect("bench descriptors");
    let plan = common::Resolved::new(&snapshot, common::SMALL_POST)
        .expect("resolves")
        .plan;
    // (seconds, nanos) pairs as they appear on the wire, in order; `extra` adds field 3.
    let inner = |pairs: &[(u32, i64)], extra: bool| {
        let mut out = Vec::new();
        for &(number, value) in pairs {
            encode_key(number, WireType::Varint, &mut out);
            encode_varint(value as u64, &mut out);
        }
        if extra {
            encode_key(3, WireType::Varint, &mut out);
            encode_varint(1, &mut out);
        }
        out
    };
    // Book.published (7) is a Timestamp, Book.read_time (13) a Duration.
    let book = |field: u32, value: &[u8]| {
        let mut out = Vec::new();
        encode_key(field, WireType::LengthDelimited, &mut out);
        encode_varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        bytes::Bytes::from(out)
    };
    // (Book field, wire pairs, extra field, fast path taken)
    type Case = (u32, &'static [(u32, i64)], bool, bool);
    let cases: [Case; 10] = [
        (7, &[], false, true),
        (7, &[(1, -14_182_940), (2, 5)], false, true),
        (7, &[(1, 1), (2, 120_000_000), (1, 2)], false, true),
        (7, &[(1, 253_402_300_799), (2, 999_999_999)], false, true),
        (7, &[(1, 253_402_300_800)], false, false),
        (7, &[(2, -1)], false, false),
        (7, &[(1, 5)], true, true),
        (13, &[(1, -1), (2, -500_000_000)], false, true),
        (13, &[(1, 3600), (2, 1_000)], false, true),
        (13, &[(1, 1), (2, -1)], false, false),
    ];
    for (field, pairs, extra, fast_expected) in cases {
        let payload = book(field, &inner(pairs, extra));
        let render = |fast_paths| {
            let options = JsonOptions {
                fast_paths,
                ..JsonOptions::default()
            };
            match render_response(&plan, &snapshot.schemas, &options, payload.clone()) {
                Ok(RenderedBody::Json(json)) => Ok(String::from_utf8_lossy(&json).into_owned()),
                Ok(_) => panic!("not JSON"),
                Err(e) => Err(e.to_string()),
            }
        };
        let context = format!("field {field}, {pairs:?}, extra {extra}");
        assert_eq!(render(true), render(false), "{context}");
        let mut fast = Vec::new();
        let taken = snapshot
            .schemas
            .render_fast(&plan.output, &payload, &JsonOptions::default(), &mut fast)
            .is_ok();
        assert_eq!(taken, fast_expected, "{context}: fast path taken");
    }
}
