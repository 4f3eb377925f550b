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

#[test]
fn a_nul_anywhere_in_the_body_is_invalid_and_its_place_named() {
    for (change, named) in [
        (with("message_id", json!("m\u{0}")), "message_id"),
        (with("customer", json!({"external_id": "c\u{0}"})), "customer.external_id"),
        (with("customer", json!({"external_id": "c", "name": "A\u{0}"})), "customer.name"),
        (with("metadata", json!({"k\u{0}": 1})), "metadata.k\\0"),
        (with("metadata", json!({"k": {"deep": ["ok", "v\u{0}"]}})), "metadata.k.deep[1]"),
        (with("attachments", json!([{"url": "x"}, {"url": "\u{0}"}])), "attachments[1].url"),
        (with("unknown_field", json!("\u{0}")), "unknown_field"),
    ] {
        let r = rejected(change);
        assert_eq!(r.kind, RejectionKind::Invalid);
        assert!(r.error.starts_with(named) && r.error.contains("NUL"), "{named}: {}", r.error);
        assert!(!r.error.contains('\0') && !r.error.contains('\n'), "{:?}", r.error);
    }
}

#[test]
fn customer_name_is_at_most_256_characters() {
    let name = |n: usize| with("customer", json!({"external_id": "c", "name": "é".repeat(n)}));
    assert!(decode_value(&name(256)).is_ok());
    let r = rejected(name(257));
    assert!(r.kind == RejectionKind::Invalid && r.error.contains("customer.name"), "{}", r.error);
}

#[test]
fn the_routing_key_must_be_the_bodys_channel_and_tenant() {
    let m = decode_value(&example()).expect("valid");
    assert!(check_route(&m, Some("whatsapp.0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10")).is_ok());
    assert!(check_route(&m, None).is_ok(), "unknown: nothing to check");
    for key in
        ["sms.0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10", "whatsapp.00000000-0000-0000-0000-000000000000", "#", ""]
    {
        let r = check_route(&m, Some(key)).expect_err(key);
        assert!(r.kind == RejectionKind::Invalid && r.error.contains("routing key"), "{}", r.error);
    }
}

/// Any JSON a gateway may send: objects of the message's fields with values of
/// any shape, strings that may hold NUL and other control characters.
fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,20}|[\u{0}a\u{7f}é]{0,5}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_\u{0}]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Whatever the body, decode returns a verdict (never panics); what it
    /// accepts obeys every rule of CONTRACT §2; what it refuses says why on one line.
    #[test]
    fn decode_never_panics_and_what_it_accepts_obeys_the_field_rules(
        overrides in proptest::collection::vec(
            (proptest::sample::select(vec!["message_id", "tenant_id", "channel", "customer", "text",
                "received_at", "conversation_id", "attachments", "metadata", "extra"]), arbitrary_json()),
            0..4),
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        use_raw in proptest::prelude::any::<bool>(),
    ) {
        let mut v = example();
        for (field, value) in overrides {
            v[field] = value;
        }
        let body = if use_raw { raw } else { v.to_string().into_bytes() };
        match decode(&body) {
            Ok(m) => {
                proptest::prop_assert!((1..=255).contains(&m.message_id.len()));
                proptest::prop_assert!(CHANNELS.contains(&m.channel.as_str()));
                proptest::prop_assert!((1..=128).contains(&m.customer_external_id.chars().count()));
                proptest::prop_assert!(m.customer_name.as_ref().is_none_or(|n| n.chars().count() <= 256));
                proptest::prop_assert!((1..=4096).contains(&m.text.chars().count()));
                let stored = serde_json::to_string(&m).unwrap_or_default();
                proptest::prop_assert!(!stored.contains("\\u0000"), "a NUL got through: {stored}");
            }
            Err(r) => {
                proptest::prop_assert!(!r.error.is_empty() && !r.error.contains('\n') && !r.error.contains('\0'));
            }
        }
    }
}

/// The fuzzer's seeds (fuzz/seeds/decode) stay what their names say: valid
/// messages, and near misses of one rule each, so fuzzing starts at the rules.
#[test]
fn the_fuzz_seeds_decode_as_their_names_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decode");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/decode") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let body = std::fs::read(&path).expect("seed");
        let refused = name.starts_with("nul-") || name == "name-257" || name == "array";
        assert_eq!(decode(&body).is_err(), refused, "{name}: {:?}", decode(&body).err());
        seen += 1;
    }
    assert!(seen >= 10, "seeds found: {seen}");
}
