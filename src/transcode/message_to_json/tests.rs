use prost_reflect::DynamicMessage;
use serde_json::json;

use super::*;

fn pool() -> prost_reflect::DescriptorPool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.proto"),
        r#"syntax = "proto3";
        package t;
        import "google/protobuf/any.proto";
        import "google/protobuf/struct.proto";
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/duration.proto";
        import "google/protobuf/wrappers.proto";
        import "google/protobuf/field_mask.proto";
        import "google/protobuf/empty.proto";
        enum E { E_ZERO = 0; E_ONE = 1; }
        message Inner { string a_b = 1; }
        message M {
          int32 i32 = 1; int64 i64 = 2; uint64 u64 = 3; float f = 4; double d = 5; bool b = 6;
          string s = 7; bytes by = 8; E e = 9; Inner inner = 10; repeated Inner list = 11;
          map<string, int32> m = 12; map<int32, string> im = 13;
          oneof o { string o1 = 14; int32 o2 = 15; }
          optional int32 opt = 16;
          google.protobuf.Any any = 17; google.protobuf.Struct st = 18;
          google.protobuf.Timestamp ts = 19; google.protobuf.Duration du = 20;
          google.protobuf.Int64Value w64 = 21; google.protobuf.FieldMask fm = 22;
          google.protobuf.Value v = 23; google.protobuf.Empty empty = 24;
          google.protobuf.ListValue lv = 25;
        }"#,
    )
    .unwrap();
    let sources = crate::descriptor::Sources {
        protos: vec!["t.proto".into()],
        includes: vec![dir.path().into()],
        ..Default::default()
    };
    crate::descriptor::load(&sources).unwrap()
}

fn message(json: serde_json::Value) -> DynamicMessage {
    let pool = pool();
    DynamicMessage::deserialize(pool.get_message_by_name("t.M").unwrap(), json).unwrap()
}

fn render(m: &DynamicMessage, options: &JsonOptions) -> String {
    let mut out = Vec::new();
    write_message(&mut out, m, options).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn unpopulated_fields_follow_protojson_emit_unpopulated() {
    let text = render(&message(json!({})), &JsonOptions::default());
    assert_eq!(
        text,
        r#"{"i32":0,"i64":"0","u64":"0","f":0,"d":0,"b":false,"s":"","by":"","e":"E_ZERO","inner":null,"list":[],"m":{},"im":{},"any":null,"st":null,"ts":null,"du":null,"w64":null,"fm":null,"v":null,"empty":null,"lv":null}"#
    );
    let omit = JsonOptions {
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    assert_eq!(render(&message(json!({})), &omit), "{}");
}

#[test]
fn scalars_and_options() {
    let m = message(
        json!({"i64": "-5", "u64": "18446744073709551615", "f": 0.1, "d": 1e21,
        "by": "AQI=", "e": "E_ONE", "o2": 7, "opt": 0, "inner": {"aB": "x"}}),
    );
    let omit = JsonOptions {
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    assert_eq!(
        render(&m, &omit),
        r#"{"i64":"-5","u64":"18446744073709551615","f":0.1,"d":1e+21,"by":"AQI=","e":"E_ONE","inner":{"aB":"x"},"o2":7,"opt":0}"#
    );
    let other = JsonOptions {
        emit_unpopulated: false,
        use_proto_names: true,
        enums_as_ints: true,
        int64_as_numbers: true,
        ..JsonOptions::default()
    };
    assert_eq!(
        render(&m, &other),
        r#"{"i64":-5,"u64":18446744073709551615,"f":0.1,"d":1e+21,"by":"AQI=","e":1,"inner":{"a_b":"x"},"o2":7,"opt":0}"#
    );
}

#[test]
fn maps_are_sorted_and_well_known_types_use_their_json_forms() {
    let m = message(json!({
        "m": {"b": 2, "a": 1, "c": 3}, "im": {"10": "x", "9": "y", "-1": "z"},
        "ts": "2024-02-29T12:00:00.500Z", "du": "-1.000000001s", "w64": "9",
        "fm": "aB.cD,e", "v": {"x": [1, "s", true, null]}, "empty": {}, "lv": [1.5],
        "st": {"k": {"n": 1}},
        "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"}
    }));
    let omit = JsonOptions {
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    assert_eq!(
        render(&m, &omit),
        r#"{"m":{"a":1,"b":2,"c":3},"im":{"-1":"z","9":"y","10":"x"},"any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"},"st":{"k":{"n":1}},"ts":"2024-02-29T12:00:00.500Z","du":"-1.000000001s","w64":"9","fm":"aB.cD,e","v":{"x":[1,"s",true,null]},"empty":{},"lv":[1.5]}"#
    );
}

#[test]
fn unknown_any_keeps_its_bytes() {
    let pool = pool();
    let mut m = DynamicMessage::new(pool.get_message_by_name("t.M").unwrap());
    let mut any = DynamicMessage::new(pool.get_message_by_name("google.protobuf.Any").unwrap());
    any.set_field_by_name(
        "type_url",
        Value::String("type.googleapis.com/acme.Nope".into()),
    );
    any.set_field_by_name("value", Value::Bytes(vec![1, 2, 3].into()));
    m.set_field_by_name("any", Value::Message(any));
    let omit = JsonOptions {
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    assert_eq!(
        render(&m, &omit),
        r#"{"any":{"@type":"type.googleapis.com/acme.Nope","value":"AQID"}}"#
    );
}

#[test]
fn non_finite_values() {
    let m = message(json!({"d": "NaN", "f": "-Infinity"}));
    let omit = JsonOptions {
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    assert_eq!(render(&m, &omit), r#"{"f":"-Infinity","d":"NaN"}"#);
    let pool = pool();
    let mut v = DynamicMessage::new(pool.get_message_by_name("google.protobuf.Value").unwrap());
    v.set_field_by_name("number_value", Value::F64(f64::NAN));
    assert!(write_message(&mut Vec::new(), &v, &omit).is_err());
}

#[test]
fn float_formatting_matches_go() {
    let cases = [
        (1.0, "1"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123456789.125, "123456789.125"),
        (0.0, "0"),
    ];
    for (f, text) in cases {
        assert_eq!(format_float(f, false).unwrap(), text, "{f}");
    }
    assert_eq!(format_float(f64::from(3.3_f32), true).unwrap(), "3.3");
    assert_eq!(format_float(f64::from(1e-7_f32), true).unwrap(), "1e-7");
}

#[test]
fn timestamps_and_durations() {
    assert_eq!(format_timestamp(0, 0).unwrap(), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_timestamp(-62_135_596_800, 0).unwrap(),
        "0001-01-01T00:00:00Z"
    );
    assert_eq!(
        format_timestamp(253_402_300_799, 999_999_999).unwrap(),
        "9999-12-31T23:59:59.999999999Z"
    );
    assert_eq!(
        format_timestamp(951_782_400, 120_000).unwrap(),
        "2000-02-29T00:00:00.000120Z"
    );
    assert!(format_timestamp(253_402_300_800, 0).is_none());
    assert_eq!(format_duration(3600, 500_000_000).unwrap(), "3600.500s");
    assert_eq!(format_duration(0, -1).unwrap(), "-0.000000001s");
    assert!(format_duration(1, -1).is_none());
    assert_eq!(format_duration(0, 0).unwrap(), "0s");
    assert_eq!(format_duration(-5, 0).unwrap(), "-5s");
    assert_eq!(format_duration(12, 10_000_000).unwrap(), "12.010s");
    assert_eq!(
        format_duration(315_576_000_000, 0).unwrap(),
        "315576000000s"
    );
}

#[test]
fn timestamps_and_durations_are_written_as_format_writes_them() {
    let fraction = |n: i32| match n {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    let mut seconds: i64 = -62_135_596_800;
    let nanos = [0, 7, 120_000, 999_000_000, 999_999_999, 5_000_000];
    while seconds < 253_402_300_799 {
        let n = nanos[usize::try_from(seconds.rem_euclid(6)).unwrap()];
        let days = seconds.div_euclid(86_400);
        let secs = seconds.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let expected = format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{}Z",
            fraction(n)
        );
        assert_eq!(format_timestamp(seconds, n).unwrap(), expected);
        let expected = format!("{}{}s", seconds.unsigned_abs(), fraction(n));
        assert_eq!(format_duration(seconds.abs(), n).unwrap(), expected);
        seconds += 86_400 * 37 + 3_601 * 13 + 7;
    }
}
