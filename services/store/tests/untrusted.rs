//! Page tokens and cursors come back from clients: any text is parsed without a panic, and
//! what the store issues parses back to itself.

#![allow(clippy::unwrap_used)]

use gridroute_store::{audit, query, subscribe::Cursor};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn any_text_as_a_token_or_cursor(text in "\\PC{0,80}", partitions in 1u16..64) {
        let _ = query::is_page_token(&text);
        let _ = audit::is_page_token(&text);
        let _ = Cursor::parse(&text, partitions);
    }

    #[test]
    fn token_shaped_text(ms in any::<u64>(), seq in any::<u64>(), p in any::<u16>(), pos in any::<u32>(), tail in "[-~.0-9]{0,6}") {
        let _ = query::is_page_token(&format!("{ms}-{seq}~{p}.{pos}{tail}"));
        let issued = [
            query::is_page_token(&format!("{ms}-{seq}~{p}.{pos}")),
            query::is_page_token(&format!("{ms}-{seq}~{p}")),
            audit::is_page_token(&format!("{ms}-{seq}")),
        ];
        prop_assert_eq!(issued, [true; 3]);
    }

    #[test]
    fn issued_cursors_parse_back(ids in prop::collection::vec((any::<u64>(), any::<u64>()), 1..16)) {
        let text = ids.iter().map(|(a, b)| format!("{a}-{b}")).collect::<Vec<_>>().join(".");
        let n = ids.len() as u16;
        let c = Cursor::parse(&text, n).unwrap();
        prop_assert_eq!(c.encode(), text.clone());
        prop_assert!(Cursor::parse(&text, n + 1).is_err());
    }
}
