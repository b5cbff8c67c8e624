//! The direct JSON-to-wire encoder on the benchmark's request bodies: the small POST and the
//! VPS sample take it, and it builds the same message as the reference path. (The
//! `json_request` fuzz target compares the two paths on every input it tries.)

#[path = "../benches/common/mod.rs"]
mod common;

use prost::Message;
use prost_reflect::DynamicMessage;
use protogate::grpc::frame;
use protogate::transcode::{fast_request, json_out, request_message, JsonOptions};

fn rendered(message: &DynamicMessage) -> String {
    let mut out = Vec::new();
    json_out::write_message(&mut out, message, &JsonOptions::default()).expect("renders");
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn the_benchmark_bodies_take_the_fast_path_and_match_the_reference() {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    for case in [common::SMALL_POST, common::VPS, common::VPS_ECHO] {
        let resolved = common::Resolved::new(&snapshot, case).expect("case resolves");
        let input = resolved.input();
        let fast = fast_request(&resolved.plan, &options, &input)
            .expect("accepted")
            .unwrap_or_else(|| panic!("{}: the fast path declined", resolved.case.name));
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

#[test]
fn routes_outside_the_fast_path_keep_the_reference_path() {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    // No body to read.
    let get = common::Resolved::new(&snapshot, common::GET_QUERY).expect("case resolves");
    assert!(get.plan.json_in.is_none());
    assert!(fast_request(&get.plan, &options, &get.input())
        .expect("no error")
        .is_none());
}
