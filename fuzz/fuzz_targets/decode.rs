//! Decode + validate on arbitrary bytes: never panics, and whatever it accepts
//! obeys CONTRACT §2's rules, and whatever it refuses has a one-line reason.
#![no_main]

use chat_worker::decode::{CHANNELS, MAX_BODY_BYTES, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(m) => {
            assert!(data.len() <= MAX_BODY_BYTES);
            assert!((1..=255).contains(&m.message_id.len()));
            assert!(CHANNELS.contains(&m.channel.as_str()));
            assert!((1..=128).contains(&m.customer_external_id.chars().count()));
            assert!((1..=4096).contains(&m.text.chars().count()) && !m.text.contains('\0'));
            assert!(m.attachments.is_array() && m.metadata.is_object());
            assert_eq!(m.fingerprint().as_str().len(), 64);
            assert!(m.routing_key().len() <= 255);
        }
        Err(r) => {
            assert!(!r.error.is_empty() && !r.error.contains('\n'), "{:?}", r.error);
        }
    }
});
