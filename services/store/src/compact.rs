//! Shorter text inside stored records. The reasons of a decision and the words of a timeline
//! entry are mostly fixed phrases and values the same stored message (or the record's report)
//! already holds: the grid's code and name, the department, the rule, the category, the point.
//! They are written with a fixed phrase book and with references to those values, and read back
//! byte for byte. Every record carries them, and the events stream carries the timeline entries
//! again, so this is a good share of a record's memory (docs/PERFORMANCE.md).
//!
//! Format: a compacted string starts with [`MARK`] (U+0001). After it, `MARK` followed by one
//! ASCII character is a token: a lowercase letter refers to a value of the [`Context`], another
//! character to a phrase of [`PHRASES`] (by its position in [`PHRASE_CODES`]), and `MARK` to
//! `MARK` itself; every other character stands for itself. A stored string that does not start
//! with `MARK` is plain text: everything written before this encoding, and text it would not
//! make shorter.
//!
//! The phrase book is append-only: stored records name phrases by position.

use std::borrow::Cow;

/// Starts a compacted string and each of its tokens.
pub const MARK: char = '\u{1}';

/// Phrases of the router's reasons, the dispatch summary and the timeline entries, by code.
/// Append only.
pub const PHRASES: &[&str] = &[
    "point (",
    ") lies in grid ",
    ") lies in no grid but in a hole of ",
    " m² between the grids of ",
    ", declared outside the grids as ",
    ") lies in no grid but within the official outline of ",
    ") lies outside every grid, ",
    " m from grid ",
    ": snapped within the accuracy radius",
    ") lies outside every grid of table ",
    ", none within ",
    "reported grid ",
    "reported grid code ",
    " is not a grid of table ",
    "the report gives only an address, ",
    ", no point and no grid: the command centre places it",
    "departments that returned the incident are excluded: ",
    "rule ",
    " (priority ",
    ") matched ",
    "category prefix ",
    "any category",
    "no rule matches category ",
    " here; the command centre ",
    " takes it",
    "no rule applies outside the grids; the command centre ",
    " of the region around it takes it",
    "the default command centre ",
    "to ",
    " by rule ",
    " (table ",
    ", table ",
    "category ",
    "source_system",
    "department",
    "grid_worker",
    "command_centre",
    "table_admin",
    "router",
    "assigned to ",
    " by arbitration",
    "district",
    "street",
    "community",
    "grid",
];

/// The code of each phrase, by position. Append only, like the phrases.
pub const PHRASE_CODES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+-./:;<=>?@[]^_{}~";

const _: () = assert!(PHRASES.len() <= PHRASE_CODES.len() && PHRASES.len() <= 64);

/// Per first byte, the phrases that start with it (a bit per phrase).
static FIRST_BYTE: std::sync::LazyLock<[u64; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [0u64; 256];
    for (i, p) in PHRASES.iter().enumerate() {
        t[p.as_bytes()[0] as usize] |= 1 << i;
    }
    t
});

/// Values a compacted string may refer to, each by a lowercase letter. What a letter means is
/// fixed by the kind of stored message (see the callers in `codec`); an absent value is empty.
#[derive(Debug, Default)]
pub struct Context<'a> {
    refs: Vec<(u8, Cow<'a, str>)>,
    /// The first bytes of the values, a bit each: `compact` looks at the values only where
    /// one of them starts.
    first: [u64; 4],
}

/// Shorter than this, a reference would not pay for its token.
const MIN_REF: usize = 3;

impl<'a> Context<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the value `letter` stands for.
    pub fn with(mut self, letter: u8, value: impl Into<Cow<'a, str>>) -> Self {
        debug_assert!(letter.is_ascii_lowercase());
        let value = value.into();
        if let Some(&b) = value.as_bytes().first() {
            self.first[usize::from(b / 64)] |= 1 << (b % 64);
        }
        self.refs.push((letter, value));
        self
    }

    /// Whether some value starts with `byte`.
    fn starts_value(&self, byte: u8) -> bool {
        self.first[usize::from(byte / 64)] & (1 << (byte % 64)) != 0
    }

    fn value(&self, letter: u8) -> Option<&str> {
        self.refs
            .iter()
            .find(|(l, _)| *l == letter)
            .map(|(_, v)| v.as_ref())
    }
}

/// `text` compacted against `ctx`, or `text` itself when that would be no shorter.
pub fn compact(text: &str, ctx: &Context) -> String {
    if text.is_empty() {
        return String::new();
    }
    // This runs over every reason the router writes, so it walks bytes and copies the runs
    // between tokens whole: only a byte some phrase or value starts with is looked at closer.
    // Such a byte is ASCII or a character's first byte (no valid UTF-8 value starts with a
    // continuation byte), so a token always starts on a character boundary.
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    out.push(MARK);
    let (mut i, mut literal) = (0, 0);
    while let Some(&byte) = bytes.get(i) {
        if byte == MARK as u8 {
            out.push_str(&text[literal..i]);
            out.push(MARK);
            out.push(MARK);
            i += 1;
            literal = i;
            continue;
        }
        let mut candidates = FIRST_BYTE[usize::from(byte)];
        let values = ctx.starts_value(byte);
        let (true, Some(rest)) = (candidates != 0 || values, text.get(i..)) else {
            i += 1;
            continue;
        };
        // The longest phrase or value that starts here.
        let mut best: Option<(usize, u8)> = None;
        let mut consider = |len: usize, code: u8| {
            if len >= MIN_REF && best.is_none_or(|(l, _)| len > l) {
                best = Some((len, code));
            }
        };
        // The second byte is compared before the rest: many phrases share a first byte (a
        // space, a letter), and a call to compare the rest costs more than the comparison.
        let second = rest.as_bytes().get(1);
        while candidates != 0 {
            let p = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            let phrase = PHRASES[p];
            if phrase.as_bytes().get(1) == second && rest.starts_with(phrase) {
                consider(phrase.len(), PHRASE_CODES[p]);
            }
        }
        for (letter, v) in ctx.refs.iter().filter(|_| values) {
            let v = v.as_bytes();
            if v.first() == Some(&byte) && v.get(1) == second && rest.as_bytes().starts_with(v) {
                consider(v.len(), *letter);
            }
        }
        match best {
            Some((len, code)) => {
                out.push_str(&text[literal..i]);
                out.push(MARK);
                out.push(char::from(code));
                i += len;
                literal = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[literal..]);
    if out.len() < text.len() || text.starts_with(MARK) {
        out
    } else {
        text.to_owned()
    }
}

/// The stored form of a text that is exactly one phrase (a region's level), without
/// [`compact`]'s search and without a context; `None` when it is not one, or when the token
/// would not be shorter.
pub fn whole_phrase(text: &str) -> Option<String> {
    let i = PHRASES.iter().position(|p| *p == text)?;
    (text.len() > 3).then(|| {
        [MARK, MARK, char::from(PHRASE_CODES[i])]
            .into_iter()
            .collect()
    })
}

/// Writes a stored string piece by piece, for a text whose shape the writer knows (the router's
/// most common reasons): what [`expand`] reads, without [`compact`]'s search. The writer is
/// responsible for each reference naming the value the text has at that place.
#[derive(Debug)]
pub struct Writer(String);

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// An empty stored string.
    pub fn new() -> Self {
        let mut s = String::with_capacity(48);
        s.push(MARK);
        Self(s)
    }

    /// A phrase of [`PHRASES`] (written as text if it is not one).
    pub fn phrase(mut self, phrase: &str) -> Self {
        match PHRASES.iter().position(|p| *p == phrase) {
            Some(i) => {
                self.0.push(MARK);
                self.0.push(char::from(PHRASE_CODES[i]));
                self
            }
            None => self.text(phrase),
        }
    }

    /// A reference to the context's value `letter` (a lowercase ASCII letter).
    pub fn value(mut self, letter: u8) -> Self {
        debug_assert!(letter.is_ascii_lowercase());
        self.0.push(MARK);
        self.0.push(char::from(letter));
        self
    }

    /// Text as it is (a `MARK` in it written as its escape).
    pub fn text(mut self, text: &str) -> Self {
        for (i, part) in text.split(MARK).enumerate() {
            if i > 0 {
                self.0.push(MARK);
                self.0.push(MARK);
            }
            self.0.push_str(part);
        }
        self
    }

    /// The stored string.
    pub fn finish(self) -> String {
        self.0
    }
}

/// The text a stored string stands for. A token that names nothing known (a newer writer's
/// phrase, a value the context lacks) is an error: the text cannot be told exactly.
pub fn expand(stored: &str, ctx: &Context) -> Result<String, String> {
    let Some(body) = stored.strip_prefix(MARK) else {
        return Ok(stored.to_owned());
    };
    let mut out = String::with_capacity(body.len() * 2);
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != MARK {
            out.push(c);
            continue;
        }
        let code = chars.next().ok_or("a token cut short")?;
        if code == MARK {
            out.push(MARK);
        } else if code.is_ascii_lowercase() {
            let v = ctx
                .value(code as u8)
                .ok_or_else(|| format!("a reference to {code:?}, which this record lacks"))?;
            out.push_str(v);
        } else {
            let i = u8::try_from(code)
                .ok()
                .and_then(|b| PHRASE_CODES.iter().position(|&p| p == b))
                .filter(|&i| i < PHRASES.len())
                .ok_or_else(|| format!("an unknown phrase {code:?}"))?;
            out.push_str(PHRASES[i]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_phrase_expands_to_itself() {
        for level in ["district", "street", "community", "grid"] {
            let stored = whole_phrase(level).unwrap();
            assert!(stored.len() < level.len());
            assert_eq!(expand(&stored, &Context::new()).unwrap(), level);
        }
        assert_eq!(whole_phrase("to "), None);
        assert_eq!(whole_phrase("a level of its own"), None);
    }

    #[test]
    fn a_written_string_expands_to_its_pieces() {
        let ctx = ctx();
        let stored = Writer::new()
            .phrase("rule ")
            .value(b'r')
            .phrase(" (priority ")
            .text("3")
            .phrase("not a phrase")
            .text("a \u{1} mark")
            .finish();
        assert_eq!(
            expand(&stored, &ctx).unwrap(),
            "rule construction-noise (priority 3not a phrasea \u{1} mark"
        );
    }

    fn ctx() -> Context<'static> {
        Context::new()
            .with(b'g', "640202008003005 沟口三社区第5网格")
            .with(b'r', "construction-noise")
            .with(b'c', "city.environment.noise.construction")
            .with(b'p', "106.36460471157542, 39.1035235")
            .with(b'd', "housing-construction")
            .with(b'e', "")
    }

    /// The plain reading of the encoding, character by character: what `compact` must equal.
    fn compact_per_char(text: &str, ctx: &Context) -> String {
        if text.is_empty() {
            return String::new();
        }
        let mut out = String::from(MARK);
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == MARK {
                out.extend([MARK, MARK]);
                rest = &rest[1..];
                continue;
            }
            let phrases = PHRASES.iter().zip(PHRASE_CODES).map(|(p, c)| (*p, *c));
            let values = ctx.refs.iter().map(|(l, v)| (v.as_ref(), *l));
            let best = phrases
                .chain(values)
                .filter(|(t, _)| t.len() >= MIN_REF && rest.starts_with(t))
                .fold(None::<(usize, u8)>, |b, (t, code)| match b {
                    Some((l, _)) if l >= t.len() => b,
                    _ => Some((t.len(), code)),
                });
            match best {
                Some((len, code)) => {
                    out.extend([MARK, char::from(code)]);
                    rest = &rest[len..];
                }
                None => {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if out.len() < text.len() || text.starts_with(MARK) {
            out
        } else {
            text.to_owned()
        }
    }

    #[test]
    fn compact_equals_the_per_character_reading() {
        let words = [
            "point (",
            "106.36460471157542, 39.1035235",
            ") lies in grid ",
            "640202008003005",
            " 沟口三社区第5网格",
            "rule ",
            "ru",
            "construction-noise",
            " (priority ",
            "c",
            "\\u{1}",
            "\u{1}",
            "housing-construction",
            "grid",
            "g",
            " ",
            "ho",
            "10",
            "沟口",
            "to ",
        ];
        // Every text of up to three of these words, in every order: the ways tokens can start,
        // overlap, nearly match and sit next to escapes and multi-byte characters.
        let mut texts = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| words.iter().map(move |w| format!("{t}{w}")))
                .collect();
            texts = longer;
            for t in &texts {
                assert_eq!(compact(t, &ctx()), compact_per_char(t, &ctx()), "{t:?}");
            }
        }
    }

    fn round_trip(text: &str) -> String {
        let stored = compact(text, &ctx());
        assert_eq!(expand(&stored, &ctx()).unwrap(), text, "{stored:?}");
        stored
    }

    #[test]
    fn the_router_s_reasons_come_back_exactly_and_much_shorter() {
        let a =
            "point (106.36460471157542, 39.1035235) lies in grid 640202008003005 沟口三社区第5网格";
        let b = "rule construction-noise (priority 0) matched category prefix city.environment.noise.construction";
        assert_eq!(round_trip(a).len(), 9);
        assert_eq!(round_trip(b).len(), 14);
        let c = "to housing-construction by rule construction-noise (table dawukou-336b9f373cee)";
        assert!(round_trip(c).len() < 40);
    }

    #[test]
    fn any_text_comes_back_exactly() {
        for t in [
            "",
            "a",
            "\u{1}",
            "\u{1}\u{1}x\u{1}",
            "x\u{1}Ay",
            "point (",
            "rule rule rule 沟口 \u{1}g",
            "category category prefix",
            "640202008003005 沟口三社区第5网格640202008003005",
            "the reporter wrote \u{1}a and \u{1}A",
        ] {
            round_trip(t);
        }
    }

    #[test]
    fn text_it_cannot_shorten_stays_plain() {
        assert_eq!(compact("towed away", &ctx()), "towed away");
        assert_eq!(expand("towed away", &ctx()).unwrap(), "towed away");
    }

    #[test]
    fn a_reference_the_record_lacks_is_an_error_not_a_guess() {
        let stored = compact("rule construction-noise", &ctx());
        assert!(expand(&stored, &Context::new()).is_err());
        assert_eq!(expand("\u{1}\u{1}\u{1}", &Context::new()).unwrap(), "\u{1}");
        for cut_or_unknown in [
            "\u{1}\u{1}",
            "\u{1}x\u{1}",
            "\u{1}\u{1}\u{7f}",
            "\u{1}\u{1}g",
        ] {
            assert!(
                expand(cut_or_unknown, &Context::new()).is_err(),
                "{cut_or_unknown:?}"
            );
        }
    }

    #[test]
    fn phrase_codes_are_neither_letters_nor_the_mark() {
        for &c in &PHRASE_CODES[..PHRASES.len()] {
            assert!(!c.is_ascii_lowercase() && c != MARK as u8 && c.is_ascii_graphic());
        }
        let mut seen = std::collections::HashSet::new();
        assert!(PHRASE_CODES.iter().all(|c| seen.insert(c)), "codes repeat");
    }
}
