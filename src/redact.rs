//! Passwords never reach logs, traces or error messages (CONTRACT §1).
//!
//! - [`redact_url`]: a configured connection string — a URL, a comma-separated
//!   list of them (Redis seeds), or a libpq `key=value` string;
//! - [`redact_text`]: free text (an error message) with URLs or `password=…` in it;
//! - [`redact_in`]: free text that may quote a known connection string verbatim;
//! - [`redact_json`]: a configuration serialised to JSON (Debug, `worker config`).
//!
//! Redaction is textual rather than a URL parser's: an operator's URL with an
//! unencoded `@`, `/` or space in its password does not parse, and must not leak
//! for that. When a string is ambiguous, more is hidden, never less.

/// What a secret is replaced with.
const MASK: &str = "***";

/// URL schemes the worker meets; text is scanned for these (and not for any
/// `word://`, which a password of punctuation could contain by chance).
const SCHEMES: &[&str] =
    &["redis+unix", "postgresql", "postgres", "rediss", "redis", "amqps", "amqp", "https", "http", "unix"];

/// Query and libpq keys whose value is a secret (compared lowercase, as substrings,
/// so `sslpassword`, `access_token`, `X-Api-Key` are covered).
const SECRET_PARTS: &[&str] =
    &["pass", "pwd", "token", "secret", "auth", "credential", "apikey", "api_key", "api-key", "private"];

/// Whether a `key=value` key names a secret. `*_env` keys name an environment
/// variable that holds one, which is not itself secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_env") {
        return false;
    }
    key == "key" || key == "sig" || key == "signature" || SECRET_PARTS.iter().any(|part| key.contains(part))
}

/// Hides the passwords of a configured connection string: userinfo passwords of
/// every URL in it (`amqp://u:***@host`), secret query parameters
/// (`?password=***`), and secret libpq keywords (`password=***`).
pub fn redact_url(raw: &str) -> String {
    let starts = url_starts(raw);
    if !starts.is_empty() {
        // A configured string is one URL, or several (a seed list): each runs to
        // the next one, so a password with spaces or quotes is still one token.
        let mut out = redact_pairs(&raw[..starts[0]]);
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(raw.len());
            out.push_str(&redact_token(&raw[start..end]));
        }
        return out;
    }
    // libpq pairs first: a password of punctuation may hold a `://`.
    let pairs = redact_pairs(raw);
    if let Some(sep) = pairs.find("://") {
        // An unknown scheme: the same rules from its `://` on.
        return format!("{}{}", &pairs[..sep], redact_token_rest(&pairs[sep..], false));
    }
    if raw.contains('=') {
        return pairs;
    }
    match raw.rsplit_once('@') {
        Some((_, host)) => format!("{MASK}@{host}"),
        None => raw.to_owned(),
    }
}

/// Hides passwords in free text: URLs of the known schemes (each ending at
/// whitespace or its closing quote) and secret `key=value` pairs.
pub fn redact_text(text: &str) -> String {
    let starts = url_starts(text);
    let mut out = String::with_capacity(text.len());
    let mut plain_from = 0;
    for (i, &start) in starts.iter().enumerate() {
        let next = starts.get(i + 1).copied().unwrap_or(text.len());
        let body = start + text[start..].find("://").map_or(0, |s| s + 3);
        let closer = closing_quote(text[..start].chars().next_back());
        let end = text[body..next]
            .find(|c: char| c.is_whitespace() || Some(c) == closer)
            .map_or(next, |e| body + e);
        out.push_str(&redact_pairs(&text[plain_from..start]));
        out.push_str(&redact_token(&text[start..end]));
        plain_from = end;
    }
    out.push_str(&redact_pairs(&text[plain_from..]));
    out
}

/// Free text that may quote `url`, the connection string it is about, verbatim:
/// a client library's error, say. The known string is replaced whole first (so a
/// password with spaces, which text scanning cannot delimit, is caught), then the
/// rest is scanned.
pub fn redact_in(text: &str, url: &str) -> String {
    let known = if url.is_empty() { text.to_owned() } else { text.replace(url, &redact_url(url)) };
    redact_text(&known)
}

/// Redacts a configuration serialised to JSON, in place: values of secret keys
/// become `***`, and strings holding URLs or `password=` pairs are redacted.
pub fn redact_json(value: &mut serde_json::Value) {
    redact_json_under(None, value);
}

fn redact_json_under(key: Option<&str>, value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact_json_under(Some(k), v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json_under(key, v)),
        Value::String(s) if key.is_some_and(is_secret_key) && !s.is_empty() => *s = MASK.to_owned(),
        // A key named like a URL holds one whole connection string (raw spaces and all).
        Value::String(s) if key.is_some_and(|k| k.to_ascii_lowercase().contains("url")) => *s = redact_url(s),
        Value::String(s) => *s = redact_text(s),
        _ => {}
    }
}

/// A URL in text ends at whitespace, or at the quote that opened it.
fn closing_quote(opener: Option<char>) -> Option<char> {
    match opener? {
        q @ ('"' | '\'' | '`') => Some(q),
        '<' => Some('>'),
        _ => None,
    }
}

/// Byte offsets where a URL of a known scheme begins.
fn url_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let sep = from + found;
        let before = &text[..sep];
        // The longest known scheme ending here (so `redis+unix` wins over `unix`).
        let scheme = SCHEMES.iter().find(|s| {
            before.len() >= s.len()
                && before.is_char_boundary(before.len() - s.len())
                && before[before.len() - s.len()..].eq_ignore_ascii_case(s)
        });
        if let Some(s) = scheme {
            starts.push(sep - s.len());
        }
        from = sep + 3;
    }
    starts
}

/// One URL token, `scheme://…`, possibly followed by a comma of a list.
fn redact_token(token: &str) -> String {
    let (token, comma) = match token.strip_suffix(',') {
        Some(t) => (t, ","),
        None => (token, ""),
    };
    let Some(sep) = token.find("://") else { return redact_pairs(token) };
    let scheme = &token[..sep];
    // A lone user name is how tokens are put into HTTP URLs (`https://TOKEN@host`);
    // elsewhere it is a login name worth keeping (`postgres://postgres@db`).
    let hide_lone_user = scheme.to_ascii_lowercase().starts_with("http");
    format!("{scheme}{}{comma}", redact_token_rest(&token[sep..], hide_lone_user))
}

/// `://userinfo@host/path?query#fragment`, from the `://` on.
fn redact_token_rest(rest: &str, hide_lone_user: bool) -> String {
    let body = &rest[3..];
    // Secret query values first: one may hold an `@`, which would otherwise be
    // taken for the end of the userinfo.
    let body = match body.find('?') {
        Some(q) => format!("{}?{}", &body[..q], redact_query(&body[q + 1..])),
        None => body.to_owned(),
    };
    // The userinfo ends at the last `@`: an unencoded `@` or `/` in a password
    // comes before it.
    let redacted = match body.rfind('@') {
        Some(at) => {
            let userinfo = &body[..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{MASK}"),
                None if hide_lone_user && !userinfo.is_empty() => MASK.to_owned(),
                None => userinfo.to_owned(),
            };
            format!("{shown}{}", &body[at..])
        }
        None => body,
    };
    format!("://{redacted}")
}

/// `k=v&k=v#k=v`: values of secret keys (compared percent-decoded) become `***`.
fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    loop {
        let end = rest.find(['&', '#']).unwrap_or(rest.len());
        let pair = &rest[..end];
        match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() && is_secret_key(&decoded(key)) => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
        if end == rest.len() {
            return out;
        }
        out.push_str(&rest[end..end + 1]);
        rest = &rest[end + 1..];
    }
}

fn decoded(key: &str) -> String {
    url::form_urlencoded::parse(key.as_bytes()).map(|(k, _)| k.into_owned()).next().unwrap_or_default()
}

/// Secret `key = value` pairs in libpq's syntax, anywhere in `text`: the value is
/// one word, or `'quoted'` with `\'` and `\\` escapes, and spaces may surround `=`.
fn redact_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find('=') {
        let eq = search + found;
        search = eq + 1;
        let key_end = text[..eq].trim_end().len();
        let key_start = text[..key_end]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "_-.".contains(c)))
            .map_or(0, |(i, c)| i + c.len_utf8());
        if key_start < copied || !is_secret_key(&text[key_start..key_end]) {
            continue;
        }
        let value_start = eq + 1 + (text[eq + 1..].len() - text[eq + 1..].trim_start().len());
        let value_end = value_end(text, value_start);
        if value_end == value_start {
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(MASK);
        copied = value_end;
        search = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

fn value_end(text: &str, start: usize) -> usize {
    let rest = &text[start..];
    if let Some(quoted) = rest.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return start + 1 + i + 1,
                _ => {}
            }
        }
        // An unterminated quote: everything after it may be the secret.
        return text.len();
    }
    start + rest.find(char::is_whitespace).unwrap_or(rest.len())
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
