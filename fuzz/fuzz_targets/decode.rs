//! Decode + validate on arbitrary bytes: never panics, and whatever it accepts
//! obeys CONTRACT §2's rules (no NUL anywhere, bounded fields, the routing key
//! its body names), and whatever it refuses has a one-line reason.
#![no_main]

use chat_worker::decode::{CHANNELS, MAX_BODY_BYTES, MAX_CUSTOMER_NAME, check_route, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(m) => {
            assert!(data.len() <= MAX_BODY_BYTES);
            assert!((1..=255).contains(&m.message_id.len()));
            assert!(CHANNELS.contains(&m.channel.as_str()));
            assert!((1..=128).contains(&m.customer_external_id.chars().count()));
            assert!(m.customer_name.as_ref().is_none_or(|n| n.chars().count() <= MAX_CUSTOMER_NAME));
            assert!((1..=4096).contains(&m.text.chars().count()));
            assert!(m.attachments.is_array() && m.metadata.is_object());
            let stored = serde_json::to_string(&m).unwrap_or_default();
            assert!(!stored.contains("\\u0000"), "a NUL was accepted");
            assert_eq!(m.fingerprint().as_str().len(), 64);
            assert!(m.routing_key().len() <= 255);
            assert!(check_route(&m, Some(&m.routing_key())).is_ok());
            assert!(check_route(&m, Some("other.key")).is_err());
        }
        Err(r) => {
            assert!(!r.error.is_empty() && !r.error.contains('\n'), "{:?}", r.error);
        }
    }
});
