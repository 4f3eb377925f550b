use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use proptest::prelude::*;

use super::*;

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn attempts_of_any_integer_type_in_range_count_and_everything_else_is_absent() {
    assert_eq!(attempts(Some(&table(&[(ATTEMPTS, AMQPValue::LongLongInt(3))]))), Some(3));
    assert_eq!(attempts(Some(&table(&[(ATTEMPTS, AMQPValue::ShortShortUInt(2))]))), Some(2));
    for odd in [
        AMQPValue::LongLongInt(-1),
        AMQPValue::LongLongInt(1 << 40),
        AMQPValue::LongString(LongString::from("3".as_bytes())),
        AMQPValue::Boolean(true),
        AMQPValue::Double(2.0),
    ] {
        assert_eq!(attempts(Some(&table(&[(ATTEMPTS, odd.clone())]))), None, "{odd:?}");
    }
    assert_eq!(attempts(None), None);
}

#[test]
fn only_a_true_boolean_marks_a_message_seen() {
    assert!(seen(Some(&table(&[(SEEN, AMQPValue::Boolean(true))]))));
    assert!(!seen(Some(&table(&[(SEEN, AMQPValue::Boolean(false))]))));
    assert!(!seen(Some(&table(&[(SEEN, long("true"))]))));
}

#[test]
fn traceparent_of_the_w3c_shape_is_kept_and_odd_ones_dropped() {
    assert_eq!(traceparent(Some(&table(&[(TRACEPARENT, long(PARENT))]))), Some(PARENT));
    let short = AMQPValue::ShortString(ShortString::from(PARENT));
    assert_eq!(traceparent(Some(&table(&[(TRACEPARENT, short)]))), Some(PARENT));
    let huge = format!("{PARENT}{}", "x".repeat(60_000));
    for odd in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
        huge.as_str(),
    ] {
        assert_eq!(traceparent(Some(&table(&[(TRACEPARENT, long(odd))]))), None, "{odd:.80}");
    }
}

#[test]
fn tracestate_rides_only_beside_a_valid_traceparent_and_within_its_bound() {
    let ok = table(&[(TRACEPARENT, long(PARENT)), (TRACESTATE, long("vendor=abc"))]);
    assert_eq!(tracestate(Some(&ok)), Some("vendor=abc"));
    let orphan = table(&[(TRACESTATE, long("vendor=abc"))]);
    assert_eq!(tracestate(Some(&orphan)), None);
    let long_state = "v=".to_owned() + &"a".repeat(600);
    let too_long = table(&[(TRACEPARENT, long(PARENT)), (TRACESTATE, long(&long_state))]);
    assert_eq!(tracestate(Some(&too_long)), None);
}

#[test]
fn a_moved_message_keeps_its_identity_and_trace_and_none_of_the_gateways_instructions() {
    let gateway = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("m-1".into())
        .with_user_id("gateway-user".into())
        .with_reply_to("somewhere".into())
        .with_expiration("1".into())
        .with_priority(9)
        .with_delivery_mode(1)
        .with_headers(table(&[
            ("CC", AMQPValue::FieldArray(vec![long("worker.inbound")].into())),
            ("BCC", AMQPValue::FieldArray(vec![long("worker.inbound")].into())),
            (TRACEPARENT, long(PARENT)),
            (ATTEMPTS, AMQPValue::LongLongInt(4)),
            (ERROR_KIND, long("forged")),
            ("x-custom", long("kept?")),
        ]));
    let moved = Carried::from_delivery(&gateway, Some("whatsapp.t")).properties([(ERROR, long("why"))]);
    assert_eq!(moved.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
    assert_eq!(moved.message_id().as_ref().map(|c| c.as_str()), Some("m-1"));
    assert_eq!(*moved.delivery_mode(), Some(2));
    assert_eq!(*moved.user_id(), None);
    assert_eq!(*moved.reply_to(), None);
    assert_eq!(*moved.expiration(), None);
    assert_eq!(*moved.priority(), None);
    let headers = moved.headers().clone().unwrap_or_default();
    let mut names: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, [TRACEPARENT, ERROR, ROUTING_KEY]);
}

fn any_value() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<f64>().prop_map(AMQPValue::Double),
        any::<Vec<u8>>().prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        "[ -~]{0,80}".prop_map(|s| AMQPValue::ShortString(ShortString::from(s))),
    ]
}

proptest! {
    /// Whatever a gateway puts in any header, reading it never panics, an
    /// accepted attempt count is in range, and an accepted trace header has the
    /// W3C shape and size.
    #[test]
    fn any_header_value_reads_without_panic_and_within_bounds(
        name in prop_oneof![Just(ATTEMPTS), Just(SEEN), Just(TRACEPARENT), Just(TRACESTATE), Just(ROUTING_KEY)],
        value in any_value(),
        parent_too in any::<bool>(),
    ) {
        let mut entries = vec![(name, value)];
        if parent_too && name != TRACEPARENT {
            entries.push((TRACEPARENT, long(PARENT)));
        }
        let t = table(&entries);
        if let Some(n) = attempts(Some(&t)) {
            prop_assert!(n <= 10_000);
        }
        let _ = seen(Some(&t));
        if let Some(p) = traceparent(Some(&t)) {
            prop_assert!(p.len() == 55 || !p.starts_with("00-"));
            prop_assert!(p.len() <= 256);
        }
        if let Some(s) = tracestate(Some(&t)) {
            prop_assert!(s.len() <= 512);
        }
        if let Some(k) = routing_key(Some(&t)) {
            prop_assert!(!k.is_empty() && k.len() <= 255);
        }
        let moved = Carried::from_delivery(&BasicProperties::default().with_headers(t), None).properties([]);
        let kept = moved.headers().clone().unwrap_or_default();
        prop_assert!(kept.inner().keys().all(|k| [TRACEPARENT, TRACESTATE].contains(&k.as_str())));
    }

    #[test]
    fn any_traceparent_string_is_judged_without_panic(s in "\\PC{0,120}") {
        let t = table(&[(TRACEPARENT, long(&s))]);
        if traceparent(Some(&t)).is_some() {
            prop_assert!(s.split('-').count() >= 4);
        }
    }
}

#[test]
fn a_kept_intake_time_is_believed_only_within_the_past_week() {
    let now = 1_800_000_000_000_000;
    let at = |v: AMQPValue| intake(Some(&table(&[(INTAKE, v)])), now);
    assert_eq!(at(AMQPValue::LongLongInt(now - 5_000_000)), Some(now - 5_000_000));
    assert_eq!(at(AMQPValue::LongLongInt(now)), Some(now));
    assert_eq!(at(AMQPValue::LongLongInt(now + 1)), None, "in the future: not ours");
    assert_eq!(at(AMQPValue::LongLongInt(now - 8 * 24 * 3600 * 1_000_000)), None, "too old");
    assert_eq!(at(AMQPValue::LongLongInt(i64::MIN)), None);
    assert_eq!(at(long("1800000000000000")), None, "a string is not a time");
    assert_eq!(intake(None, now), None);
}

#[test]
fn a_moved_message_has_no_intake_time_unless_it_is_parked() {
    let carried = Carried::from_delivery(&BasicProperties::default(), Some("web.t"));
    let plain = carried.properties([]);
    assert!(plain.headers().as_ref().is_some_and(|h| !h.inner().contains_key(INTAKE)));
}
