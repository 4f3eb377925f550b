//! Words: tokenizing, stemming, stop words, numbers and prices.

/// Lowercase words of letters and digits; `5,000` stays one number, `5k` is 5000.
pub(super) fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let digit_comma = c == ','
            && current.chars().last().is_some_and(|p| p.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c.is_alphanumeric() {
            current.push(c);
        } else if !digit_comma && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A crude English stem, enough for plurals: shoes -> shoe, watches -> watch, hours -> hour.
pub(super) fn stem(word: &str) -> String {
    for suffix in ["sses", "shes", "ches", "xes", "zes"] {
        if word.len() > suffix.len() + 1 && word.ends_with(suffix) {
            return word[..word.len() - 2].to_owned();
        }
    }
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        return word[..word.len() - 1].to_owned();
    }
    word.to_owned()
}

const STOP: &[&str] = &[
    "a",
    "about",
    "am",
    "an",
    "and",
    "any",
    "anything",
    "are",
    "at",
    "be",
    "buy",
    "can",
    "cheap",
    "cheaper",
    "cost",
    "could",
    "do",
    "does",
    "for",
    "from",
    "get",
    "give",
    "got",
    "have",
    "has",
    "hello",
    "hi",
    "how",
    "i",
    "if",
    "in",
    "is",
    "it",
    "its",
    "just",
    "ll",
    "looking",
    "look",
    "me",
    "much",
    "my",
    "need",
    "of",
    "on",
    "or",
    "our",
    "please",
    "price",
    "prices",
    "sell",
    "show",
    "some",
    "tell",
    "than",
    "that",
    "the",
    "there",
    "this",
    "to",
    "under",
    "below",
    "over",
    "above",
    "less",
    "more",
    "between",
    "max",
    "maximum",
    "up",
    "want",
    "was",
    "we",
    "what",
    "whats",
    "which",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "s",
    "d",
    "m",
    "t",
    "re",
    "ve",
    "like",
    "find",
    "available",
    "where",
    "when",
    "who",
    "why",
    "will",
    "shall",
    "should",
    "than",
    "then",
    "them",
    "they",
    "these",
    "those",
    "one",
    "ones",
    "all",
    "also",
    "too",
    "so",
    "not",
    "no",
    "yes",
    "ok",
    "okay",
    "hey",
    "thanks",
    "thank",
    "kes",
    "usd",
    "ksh",
    "shillings",
    "dollars",
];

pub(super) fn is_stop(word: &str) -> bool {
    static SET: std::sync::LazyLock<std::collections::HashSet<&str>> =
        std::sync::LazyLock::new(|| STOP.iter().copied().collect());
    SET.contains(word)
}

/// Search terms: stems of the words that are neither stop words nor numbers.
pub(super) fn terms(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words {
        if is_stop(w) || parse_number(w).is_some() || w.chars().count() < 2 {
            continue;
        }
        let s = stem(w);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Whether a search term matches a word of the text: the same stem, or one a
/// prefix of the other of at least 3 letters ("pay" ~ "payment", "deliver" ~ "delivery").
pub(super) fn matches(term: &str, word: &str) -> bool {
    let (short, long) = if term.len() <= word.len() { (term, word) } else { (word, term) };
    short == long || (short.len() >= 3 && long.starts_with(short))
}

/// `5000`, `5,000` (already joined by `words`), `5k`, `4500.50`.
pub(super) fn parse_number(word: &str) -> Option<f64> {
    let cleaned: String = word.chars().filter(|c| *c != ',').collect();
    if let Some(thousands) = cleaned.strip_suffix('k') {
        return thousands.parse::<f64>().ok().map(|n| n * 1000.0);
    }
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// `4500.0` -> `4,500`; `4500.5` -> `4,500.50`.
pub(super) fn format_price(amount: f64) -> String {
    let cents = (amount * 100.0).round() as i64;
    let (whole, frac) = (cents / 100, cents % 100);
    let digits = whole.abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if whole < 0 { "-" } else { "" };
    if frac == 0 { format!("{sign}{grouped}") } else { format!("{sign}{grouped}.{:02}", frac.abs()) }
}

/// A price as a customer reads it: `4,500 KES`; an item without a usable price
/// (a NULL in the admin app's row) is "price on request", never "0".
pub(crate) fn price_text(price: Option<f64>, currency: &str) -> String {
    match (price, currency.trim()) {
        (Some(amount), "") => format_price(amount),
        (Some(amount), currency) => format!("{} {currency}", format_price(amount)),
        (None, _) => "price on request".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_grouped_numbers_and_drop_punctuation() {
        assert_eq!(words("Running shoes under 5,000?"), ["running", "shoes", "under", "5000"]);
        assert_eq!(words("a, b"), ["a", "b"]);
    }

    #[test]
    fn plurals_stem_to_their_singular() {
        for (w, s) in
            [("shoes", "shoe"), ("watches", "watch"), ("hours", "hour"), ("glass", "glass"), ("mats", "mat")]
        {
            assert_eq!(stem(w), s);
        }
    }

    #[test]
    fn numbers_and_prices() {
        assert_eq!(parse_number("5k"), Some(5000.0));
        assert_eq!(parse_number("shoe"), None);
        assert_eq!(format_price(4500.0), "4,500");
        assert_eq!(format_price(1234567.5), "1,234,567.50");
        assert_eq!(format_price(999.0), "999");
        assert_eq!(price_text(Some(4500.0), "KES"), "4,500 KES");
        assert_eq!(price_text(Some(4500.0), ""), "4,500");
        assert_eq!(price_text(None, "KES"), "price on request");
    }

    #[test]
    fn prefixes_of_three_letters_or_more_match() {
        assert!(matches("pay", "payment") && matches("delivery", "deliver") && matches("run", "running"));
        assert!(!matches("pa", "payment") && !matches("shoe", "mat"));
    }

    #[test]
    fn terms_skip_stop_words_and_numbers() {
        assert_eq!(terms(&words("Do you have running shoes under 5000?")), ["running", "shoe"]);
    }
}
