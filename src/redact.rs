//! Passwords never reach logs, traces or error messages (CONTRACT §1).
//!
//! Every URL the worker prints goes through [`redact_url`] first.

/// Replaces the password of a URL (and any `password=` query parameter) with `***`.
/// A string that does not parse as a URL is returned without its userinfo part.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.eq_ignore_ascii_case("password");
                    (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
                })
                .collect();
            if !pairs.is_empty() {
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => match raw.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => raw.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_password_keeps_user_and_host() {
        let out = redact_url("amqp://guest:s3cret@rabbit:5672/%2f");
        assert_eq!(out, "amqp://guest:***@rabbit:5672/%2f");
        assert!(!out.contains("s3cret"));
    }

    #[test]
    fn hides_password_query_parameter() {
        let out = redact_url("postgres://db/worker?sslmode=require&password=hunter2");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("sslmode=require"));
    }

    #[test]
    fn unparseable_url_loses_its_userinfo() {
        assert_eq!(redact_url("not a url:pw@host"), "***@host");
    }
}
