//! A tenant's share of each process's concurrency, as its `settings` say:
//!
//! ```json
//! { "max_concurrency": 16 }
//! ```
//!
//! How many of its messages one process works on at once, at most (absent or
//! null: `worker.tenant_concurrency`); never above `worker.concurrency`. A
//! setting that cannot be read is the default, and is said so in the log.

use serde_json::Value;

/// The cap `settings` give, or `default`; the error says what is wrong with the setting.
pub fn tenant_cap(settings: &Value, default: usize, concurrency: usize) -> Result<usize, String> {
    match settings.get("max_concurrency") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(concurrency))
            .ok_or_else(|| format!("max_concurrency is {v}, not a whole number of at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tenants_cap_is_read_from_settings() {
        assert_eq!(tenant_cap(&json!({}), 128, 1024), Ok(128));
        assert_eq!(tenant_cap(&json!({"max_concurrency": null}), 128, 1024), Ok(128));
        assert_eq!(tenant_cap(&json!({"max_concurrency": 4}), 128, 1024), Ok(4));
        assert_eq!(
            tenant_cap(&json!({"max_concurrency": 5000}), 128, 1024),
            Ok(1024),
            "never above concurrency"
        );
        for bad in [json!(0), json!(-1), json!(2.5), json!("8"), json!(true)] {
            let err = tenant_cap(&json!({ "max_concurrency": bad }), 128, 1024).expect_err("refused");
            assert!(err.starts_with("max_concurrency is"), "{err}");
        }
    }
}
