use serde_json::json;

use super::*;

fn example() -> Value {
    json!({
        "message_id": "wamid.HBgMMjU0NzAwMDAwMDAxFQIAEhgg",
        "tenant_id": "0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10",
        "channel": "whatsapp",
        "customer": { "external_id": "+254700000001", "name": "Amina" },
        "conversation_id": null,
        "text": "Do you have running shoes under 5000?",
        "received_at": "2026-11-21T10:15:30Z",
        "attachments": [],
        "metadata": {}
    })
}

fn decode_value(v: &Value) -> Result<Inbound, Rejection> {
    decode(v.to_string().as_bytes())
}

fn rejected(v: Value) -> Rejection {
    decode_value(&v).expect_err("should be rejected")
}

fn with(field: &str, value: Value) -> Value {
    let mut v = example();
    v[field] = value;
    v
}

fn without(field: &str) -> Value {
    let mut v = example();
    v.as_object_mut().map(|o| o.remove(field));
    v
}

#[test]
fn the_contract_example_is_valid_and_fingerprints_as_documented() {
    let inbound = decode_value(&example()).expect("valid");
    assert_eq!(inbound.channel, "whatsapp");
    assert_eq!(inbound.customer_name.as_deref(), Some("Amina"));
    assert_eq!(inbound.conversation_id, None);
    assert_eq!(inbound.routing_key(), "whatsapp.0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10");
    assert_eq!(
        inbound.fingerprint().as_str(),
        "86acff0386cd6104da65408b802f29df6ca81af393c03a7d4aff623921414521"
    );
}

#[test]
fn unknown_fields_are_ignored_and_optional_ones_may_be_absent() {
    let mut v = without("attachments");
    v.as_object_mut().map(|o| o.remove("metadata"));
    v["shiny_new_field"] = json!({"x": 1});
    assert!(decode_value(&v).is_ok());
}

#[test]
fn malformed_bodies() {
    for (body, expect) in [
        (&b"\xff\xfe"[..], "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1,2]", "JSON an array"),
        (b"\"hello\"", "JSON a string"),
        (b"", "not JSON"),
    ] {
        let r = decode(body).expect_err("malformed");
        assert_eq!(r.kind, RejectionKind::Malformed, "{body:?}");
        assert!(r.error.contains(expect), "{body:?}: {}", r.error);
    }
}

#[test]
fn oversized_body_is_malformed_even_if_it_is_json() {
    let big = with("text", json!("a".repeat(MAX_BODY_BYTES)));
    let r = rejected(big);
    assert_eq!(r.kind, RejectionKind::Malformed);
    assert!(r.error.contains("over the limit"), "{}", r.error);
}

#[test]
fn deep_nesting_is_malformed_not_a_crash() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(decode(body.as_bytes()).expect_err("deep").kind, RejectionKind::Malformed);
}

#[test]
fn each_required_field_missing_is_invalid_and_named() {
    for field in ["message_id", "tenant_id", "channel", "customer", "text", "received_at"] {
        let r = rejected(without(field));
        assert_eq!(r.kind, RejectionKind::Invalid);
        assert!(r.error.contains(field), "{field}: {}", r.error);
    }
}

#[test]
fn field_rules() {
    let cases = [
        (with("message_id", json!("")), "message_id must be 1..255 bytes"),
        (with("message_id", json!("é".repeat(128))), "message_id must be 1..255 bytes, got 256"),
        (with("message_id", json!(42)), "message_id must be a string"),
        (with("tenant_id", json!("not-a-uuid")), "tenant_id `not-a-uuid` is not a UUID"),
        (with("channel", json!("fax")), "channel `fax` is not one of"),
        (with("customer", json!("+2547")), "customer must be an object"),
        (with("customer", json!({"name": "x"})), "customer.external_id is required"),
        (with("customer", json!({"external_id": ""})), "customer.external_id must be 1..128"),
        (with("customer", json!({"external_id": "x".repeat(129)})), "customer.external_id must be 1..128"),
        (with("customer", json!({"external_id": "x", "name": 3})), "customer.name must be a string"),
        (with("conversation_id", json!("nope")), "conversation_id `nope` is not a UUID"),
        (with("conversation_id", json!(7)), "conversation_id must be a UUID string or null"),
        (with("text", json!("")), "text must be 1..4096 characters, got 0"),
        (with("text", json!("x".repeat(4097))), "text must be 1..4096 characters, got 4097"),
        (with("text", json!("a\u{0}b")), "NUL"),
        (with("received_at", json!("yesterday")), "received_at `yesterday` is not an RFC 3339"),
        (with("attachments", json!({})), "attachments must be an array"),
        (with("metadata", json!([])), "metadata must be an object"),
    ];
    for (value, expect) in cases {
        let r = rejected(value);
        assert_eq!(r.kind, RejectionKind::Invalid, "{expect}");
        assert!(r.error.contains(expect), "expected `{expect}` in `{}`", r.error);
        assert!(!r.error.contains('\n'), "x-error must be one line: {}", r.error);
    }
}

#[test]
fn limits_count_characters_for_text_and_external_id() {
    assert!(decode_value(&with("text", json!("é".repeat(4096)))).is_ok());
    assert!(decode_value(&with("customer", json!({"external_id": "é".repeat(128)}))).is_ok());
    assert!(decode_value(&with("message_id", json!("x".repeat(255)))).is_ok());
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v = with("channel", json!("fax"));
    v["text"] = json!("");
    let r = rejected(v);
    assert!(r.error.contains("channel") && r.error.contains("text"), "{}", r.error);
}

#[test]
fn quoted_input_is_bounded_and_single_line() {
    let r = rejected(with("tenant_id", json!(format!("{}\nX", "z".repeat(500)))));
    assert!(r.error.len() < 200, "{}", r.error);
    assert!(!r.error.contains('\n'));
}
