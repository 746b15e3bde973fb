//! Hierarchical category codes such as `city.vehicle.abandoned`.
//!
//! A code is one or more lower-case segments of `[a-z0-9_]` joined by dots. A rule's category
//! matches a report's category when it is equal to it or a dot-bounded prefix of it:
//! `city.vehicle` matches `city.vehicle.abandoned` but not `city.vehicles`.

/// Longest accepted category code, in bytes.
pub const MAX_CATEGORY_LEN: usize = 128;

/// Whether `code` is a well-formed category code.
pub fn is_valid(code: &str) -> bool {
    // One pass over the bytes (the router checks every report's category): segments of
    // `[a-z0-9_]`, none empty, joined by dots.
    if code.len() > MAX_CATEGORY_LEN {
        return false;
    }
    let mut after_dot = true;
    for &b in code.as_bytes() {
        match b {
            b'.' if after_dot => return false,
            b'.' => after_dot = true,
            b'a'..=b'z' | b'0'..=b'9' | b'_' => after_dot = false,
            _ => return false,
        }
    }
    !after_dot
}

/// Whether the rule category `prefix` covers the report category `code`.
/// The empty prefix covers everything.
pub fn covers(prefix: &str, code: &str) -> bool {
    prefix.is_empty()
        || (code.starts_with(prefix)
            && (code.len() == prefix.len() || code.as_bytes()[prefix.len()] == b'.'))
}

/// The key rules are bucketed by: the first two segments (or the whole code if shorter).
pub fn bucket_key(code: &str) -> &str {
    let mut dots = code
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'.')
        .map(|(i, _)| i);
    match (dots.next(), dots.next()) {
        (Some(_), Some(i)) => &code[..i],
        _ => code,
    }
}

/// The number of segments of a category prefix; 0 for the empty prefix.
pub fn depth(prefix: &str) -> usize {
    if prefix.is_empty() {
        0
    } else {
        prefix.split('.').count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        assert!(is_valid("city.vehicle.abandoned"));
        assert!(is_valid("a"));
        assert!(is_valid("city.fire_lane.blocked"));
        for bad in [
            "", "City.x", "city..x", ".city", "city.", "city x", "城市", ".",
        ] {
            assert!(!is_valid(bad), "{bad} accepted");
        }
        assert!(is_valid(&"a".repeat(MAX_CATEGORY_LEN)));
        assert!(!is_valid(&"a".repeat(MAX_CATEGORY_LEN + 1)));
        // The one-pass check agrees with the definition (dot-separated, non-empty segments of
        // [a-z0-9_]) on every string of up to four characters from a small alphabet.
        let defined = |code: &str| {
            !code.is_empty()
                && code.split('.').all(|seg| {
                    !seg.is_empty()
                        && seg
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        };
        let alphabet = ['a', '9', '_', '.', 'A', '-'];
        let mut codes = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = codes
                .iter()
                .flat_map(|c| alphabet.iter().map(move |a| format!("{c}{a}")))
                .collect();
            codes.extend(longer);
        }
        for code in &codes {
            assert_eq!(is_valid(code), defined(code), "{code:?}");
        }
    }

    #[test]
    fn prefix_is_dot_bounded() {
        assert!(covers("city.vehicle", "city.vehicle.abandoned"));
        assert!(covers("city.vehicle", "city.vehicle"));
        assert!(covers("", "city.vehicle"));
        assert!(!covers("city.vehicle", "city.vehicles.abandoned"));
        assert!(!covers("city.vehicle.abandoned", "city.vehicle"));
        assert_eq!(depth("city.vehicle"), 2);
        assert_eq!(depth(""), 0);
        assert_eq!(bucket_key("city.vehicle.abandoned"), "city.vehicle");
        assert_eq!(bucket_key("city.vehicle"), "city.vehicle");
        assert_eq!(bucket_key("civil"), "civil");
    }
}
