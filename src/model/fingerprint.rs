//! A message's identity (CONTRACT §2): lowercase hex SHA-256 over the tenant,
//! channel, customer, provider message id and text, each written as
//! `<byte length>:<bytes>` so that no two field lists can produce the same input.

use std::fmt;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(
        tenant_id: &str,
        channel: &str,
        customer_external_id: &str,
        message_id: &str,
        text: &str,
    ) -> Self {
        let mut hasher = Sha256::new();
        for field in [tenant_id, channel, customer_external_id, message_id, text] {
            hasher.update(field.len().to_string().as_bytes());
            hasher.update(b":");
            hasher.update(field.as_bytes());
        }
        Fingerprint(hex::encode(hasher.finalize()))
    }

    /// Wraps a fingerprint read back from storage or typed by an operator.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Fingerprint(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The deterministic id of this message's reply (CONTRACT §4).
    pub fn reply_id(&self) -> String {
        format!("reply:{}", self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_contract_example() {
        let fp = Fingerprint::of(
            "0b6f1c7e-2f0a-4c43-9d43-8f1f2b8a9a10",
            "whatsapp",
            "+254700000001",
            "wamid.HBgMMjU0NzAwMDAwMDAxFQIAEhgg",
            "Do you have running shoes under 5000?",
        );
        assert_eq!(fp.as_str(), "86acff0386cd6104da65408b802f29df6ca81af393c03a7d4aff623921414521");
        assert_eq!(fp.reply_id(), format!("reply:{fp}"));
    }

    #[test]
    fn length_prefix_keeps_shifted_fields_apart() {
        let a = Fingerprint::of("t", "web", "ab", "c", "x");
        let b = Fingerprint::of("t", "web", "a", "bc", "x");
        assert_ne!(a, b);
    }

    #[test]
    fn lengths_are_counted_in_bytes_not_chars() {
        // "é" is 2 bytes: the prefix must say 2, so this differs from a 1-byte text.
        let accented = Fingerprint::of("t", "web", "c", "m", "é");
        let mut hasher = Sha256::new();
        hasher.update(b"1:t3:web1:c1:m2:\xc3\xa9");
        assert_eq!(accented.as_str(), hex::encode(hasher.finalize()));
    }

    #[test]
    fn parse_accepts_only_lowercase_hex_of_64() {
        assert!(Fingerprint::parse(&"a".repeat(64)).is_some());
        assert!(Fingerprint::parse(&"A".repeat(64)).is_none());
        assert!(Fingerprint::parse("abc").is_none());
    }
}
