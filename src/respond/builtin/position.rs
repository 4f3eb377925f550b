//! A message that points back at a list: "2", "#2", "the second one", "first",
//! "last", "I'll take the 3rd", "that one".

use super::text::words;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pointer {
    /// 1-based position.
    Nth(u32),
    Last,
    /// "that one": the single item the conversation was last talking about.
    That,
}

const ORDINALS: &[(&str, u32)] = &[
    ("first", 1),
    ("second", 2),
    ("third", 3),
    ("fourth", 4),
    ("fifth", 5),
    ("sixth", 6),
    ("seventh", 7),
    ("eighth", 8),
    ("ninth", 9),
    ("tenth", 10),
    ("1st", 1),
    ("2nd", 2),
    ("3rd", 3),
    ("4th", 4),
    ("5th", 5),
    ("6th", 6),
    ("7th", 7),
    ("8th", 8),
    ("9th", 9),
    ("10th", 10),
];

/// Words that may surround a pointer without making the message about something else.
const FILLER: &[&str] = &[
    "the", "one", "please", "i", "ll", "will", "take", "want", "choose", "pick", "get", "go", "with", "id",
    "d", "like", "number", "no", "option", "item", "ok", "okay", "yes", "then", "give", "me", "show",
    "about", "tell", "more", "how", "much", "is", "it", "for", "a", "buy", "order", "book", "that", "this",
    "s",
];

pub(super) fn parse(text: &str) -> Option<Pointer> {
    let words = words(text.trim_start_matches('#'));
    if words.is_empty() || words.len() > 8 {
        return None;
    }
    let mut found = None;
    for w in &words {
        let this = if let Ok(n) = w.parse::<u32>() {
            (1..=20).contains(&n).then_some(Pointer::Nth(n))
        } else if w == "last" {
            Some(Pointer::Last)
        } else {
            ORDINALS.iter().find(|(name, _)| name == w).map(|(_, n)| Pointer::Nth(*n))
        };
        match (this, found) {
            (Some(p), None) => found = Some(p),
            (Some(_), Some(_)) => return None, // "1 or 2?": not one pointer
            (None, _) if FILLER.contains(&w.as_str()) => {}
            (None, _) => return None,
        }
    }
    found.or_else(|| {
        let joined = words.join(" ");
        ["that one", "this one", "that", "it"].iter().any(|p| joined.ends_with(p)).then_some(Pointer::That)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_are_recognised() {
        for (text, want) in [
            ("2", Pointer::Nth(2)),
            ("#3", Pointer::Nth(3)),
            ("the second one", Pointer::Nth(2)),
            ("First", Pointer::Nth(1)),
            ("last", Pointer::Last),
            ("I'll take the 3rd please", Pointer::Nth(3)),
            ("option 4", Pointer::Nth(4)),
            ("that one", Pointer::That),
            ("I want that one", Pointer::That),
        ] {
            assert_eq!(parse(text), Some(want), "{text}");
        }
    }

    #[test]
    fn questions_with_numbers_are_not_pointers() {
        for text in [
            "Do you have running shoes under 5000?",
            "1 or 2?",
            "What are your opening hours?",
            "hello",
            "2000",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
