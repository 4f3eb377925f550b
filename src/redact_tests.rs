use proptest::prelude::*;

use super::*;

#[test]
fn hides_password_keeps_user_and_host() {
    let out = redact_url("amqp://guest:s3cret@rabbit:5672/%2f");
    assert_eq!(out, "amqp://guest:***@rabbit:5672/%2f");
}

#[test]
fn hides_secret_query_parameters_whatever_their_case() {
    let out = redact_url(
        "postgres://db/worker?sslmode=require&password=hunter2&SSLPassword=k1&token=t1&access_token=t2\
         &api_key=k2&Secret=s1&auth=a1&X-Api-Key=k3",
    );
    assert_eq!(
        out,
        "postgres://db/worker?sslmode=require&password=***&SSLPassword=***&token=***&access_token=***\
         &api_key=***&Secret=***&auth=***&X-Api-Key=***"
    );
    assert_eq!(
        redact_url("https://agent/v1?pass%77ord=x#access_token=y"),
        "https://agent/v1?pass%77ord=***#access_token=***"
    );
}

#[test]
fn hides_libpq_keyword_passwords_plain_and_quoted() {
    assert_eq!(redact_url("host=db password=s3cret user=x"), "host=db password=*** user=x");
    assert_eq!(
        redact_url("host=db password = 'quoted \\' secret' dbname=worker"),
        "host=db password = *** dbname=worker"
    );
    assert_eq!(redact_url("sslpassword='never closed dbname=x"), "sslpassword=***");
}

#[test]
fn hides_every_password_of_a_seed_list() {
    assert_eq!(
        redact_url("redis://:pw1@a:1,redis://:pw2@b:2,rediss://u:pw3@c:3/0"),
        "redis://:***@a:1,redis://:***@b:2,rediss://u:***@c:3/0"
    );
}

#[test]
fn an_unencoded_at_slash_or_space_in_a_password_is_hidden_too() {
    assert_eq!(redact_url("amqp://u:p@ss/w rd@rabbit:5672/vh"), "amqp://u:***@rabbit:5672/vh");
    assert_eq!(redact_url("postgres://u:12/x@db/w"), "postgres://u:***@db/w", "not taken for a port");
    assert_eq!(
        redact_url("postgres://db/w?password=a@b&sslmode=require"),
        "postgres://db/w?password=***&sslmode=require"
    );
}

#[test]
fn a_token_in_an_http_user_name_is_hidden_a_login_name_elsewhere_is_kept() {
    assert_eq!(redact_url("https://ghp_abc123@agent.example/v1"), "https://***@agent.example/v1");
    assert_eq!(
        redact_url("postgres://postgres@127.0.0.1:5432/worker"),
        "postgres://postgres@127.0.0.1:5432/worker"
    );
    assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
}

#[test]
fn unparseable_url_loses_its_userinfo() {
    assert_eq!(redact_url("not a url:pw@host"), "***@host");
    assert_eq!(redact_url("mysql://u:pw@host/db"), "mysql://u:***@host/db");
}

#[test]
fn urls_and_pairs_inside_an_error_message_are_hidden() {
    let text = "error: cannot reach amqp://u:pw1@h:5672/%2f (timed out); then \"postgres://p:pw2@db/w\" \
                refused; dsn host=db password=pw3 port=5432; https://agent/v1?api_key=pw4 answered 500";
    let out = redact_text(text);
    for secret in ["pw1", "pw2", "pw3", "pw4"] {
        assert!(!out.contains(secret), "{out}");
    }
    assert_eq!(
        out,
        "error: cannot reach amqp://u:***@h:5672/%2f (timed out); then \"postgres://p:***@db/w\" \
         refused; dsn host=db password=*** port=5432; https://agent/v1?api_key=*** answered 500"
    );
    assert_eq!(redact_text("nothing secret: chat-worker: a=b"), "nothing secret: chat-worker: a=b");
}

#[test]
fn a_known_url_quoted_verbatim_is_hidden_even_with_spaces_in_its_password() {
    let url = "postgres://u:two words@db/w";
    let out = redact_in(&format!("connecting to {url}: refused"), url);
    assert_eq!(out, "connecting to postgres://u:***@db/w: refused");
}

#[test]
fn json_secrets_are_masked_and_urls_redacted() {
    let mut value = serde_json::json!({
        "url": "amqp://u:pw1@h/%2f",
        "api_key": "pw2",
        "api_key_env": "OPENAI_API_KEY",
        "headers": { "Authorization": "Bearer pw3" },
        "seeds": ["redis://:pw4@a:1"],
        "key_prefix": "chat-worker:",
    });
    redact_json(&mut value);
    let text = value.to_string();
    for secret in ["pw1", "pw2", "pw3", "pw4"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(value["api_key_env"], "OPENAI_API_KEY", "names a variable, is not one");
    assert_eq!(value["key_prefix"], "chat-worker:");
}

/// Characters a password may hold, the awkward ones included.
const ANY: &str = r#"[a-zA-Z0-9@:/% '"?#=&,;+.~_\\éü中☃😀-]"#;
/// The same without what ends a query value (`&`, `#`) or a libpq word.
const WORD: &str = r#"[a-zA-Z0-9@:/%"?=,;+.~_éü中☃😀-]"#;

/// A password of at least 6 characters holding one that no template around it
/// contains, so finding it in the output can only mean it leaked.
fn password(chars: &'static str) -> impl Strategy<Value = String> {
    let part = |n: &str| proptest::string::string_regex(&format!("{chars}{{{n}}}")).expect("a valid regex");
    (part("3,12"), "[ЖЮЯ]", part("2,12")).prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

fn percent_encoded(p: &str) -> String {
    p.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Connection strings around a password, each with a part redaction must keep.
fn urls_around(p: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("amqp://guest:{p}@rabbit:5672/%2f"), "@rabbit:5672/%2f"),
        (format!("amqps://guest:{p}@rabbit/vh"), "@rabbit/vh"),
        (format!("redis://:{p}@cache:6379/0"), "@cache:6379/0"),
        (format!("rediss://default:{p}@cache:6380"), "@cache:6380"),
        (format!("postgres://worker:{p}@db:5432/worker?sslmode=require"), "@db:5432/worker?sslmode=require"),
        (format!("postgresql://worker:{p}@db/worker"), "@db/worker"),
        (format!("https://bot:{p}@agent.example/v1"), "@agent.example/v1"),
        (format!("redis://:{p}@a:1,redis://:{p}@b:2,redis://:{p}@c:3"), "@c:3"),
    ]
}

const SECRET_KEYS: &[&str] =
    &["password", "sslpassword", "PASSWORD", "Token", "access_token", "api_key", "apikey", "secret", "auth"];

fn quoted(p: &str) -> String {
    format!("'{}'", p.replace('\\', "\\\\").replace('\'', "\\'"))
}

proptest! {
    #[test]
    fn a_raw_password_never_survives_a_configured_url(p in password(ANY)) {
        for (url, kept) in urls_around(&p) {
            let out = redact_url(&url);
            prop_assert!(!out.contains(&p), "{url} -> {out}");
            prop_assert!(out.contains(kept), "{url} -> {out}");
        }
    }

    #[test]
    fn an_encoded_password_never_survives_a_url_configured_or_in_an_error(p in password(ANY)) {
        let encoded = percent_encoded(&p);
        for (url, kept) in urls_around(&encoded) {
            for out in [
                redact_url(&url),
                redact_text(&format!("error: cannot reach {url}: connection refused")),
                redact_text(&format!("connecting to \"{url}\" failed")),
            ] {
                prop_assert!(!out.contains(&p) && !out.contains(&encoded), "{url} -> {out}");
                prop_assert!(out.contains(kept), "{url} -> {out}");
            }
        }
    }

    #[test]
    fn a_secret_query_value_never_survives(
        p in password(WORD),
        key in proptest::sample::select(SECRET_KEYS),
    ) {
        let encoded = percent_encoded(&p);
        for value in [&p, &encoded] {
            let url = format!("postgres://db:5432/worker?sslmode=require&{key}={value}&application_name=w");
            for out in [redact_url(&url), redact_text(&format!("error at {url} here"))] {
                prop_assert!(!out.contains(&p) && !out.contains(&encoded), "{url} -> {out}");
                prop_assert!(out.contains("db:5432/worker?sslmode=require&"), "{url} -> {out}");
            }
        }
    }

    #[test]
    fn a_libpq_password_never_survives_quoted_or_plain(plain in password(WORD), any in password(ANY)) {
        let strings = [
            format!("host=db user=worker password={plain} dbname=worker"),
            format!("host=db user=worker password={} dbname=worker", quoted(&any)),
            format!("host=db sslpassword = {} dbname=worker", quoted(&any)),
        ];
        for text in &strings {
            for out in [redact_url(text), redact_text(&format!("cannot connect ({text}): refused"))] {
                prop_assert!(!out.contains(&plain) && !out.contains(&any), "{text} -> {out}");
                prop_assert!(!out.contains(&quoted(&any)), "{text} -> {out}");
                prop_assert!(out.contains("host=db") && out.contains("dbname=worker"), "{text} -> {out}");
            }
        }
    }

    #[test]
    fn a_known_url_quoted_verbatim_in_an_error_never_leaks(p in password(ANY)) {
        for (url, _) in urls_around(&p) {
            let out = redact_in(&format!("connection to {url} refused"), &url);
            prop_assert!(!out.contains(&p), "{url} -> {out}");
        }
    }

    #[test]
    fn any_text_is_redacted_without_panicking(text in any::<String>(), url in any::<String>()) {
        let _ = redact_url(&text);
        let _ = redact_text(&text);
        let _ = redact_in(&text, &url);
    }
}
