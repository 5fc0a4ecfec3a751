//! The identifier policy for names (chatos logins, babel names, rooms user
//! names, accounts pseudos): one rule for every dialect, applied by the
//! hub's login and by accounts registration.
//!
//! A name is accepted only if it is already in the form the PRECIS
//! UsernameCasePreserved profile (RFC 8265 §3.4) gives it: Unicode NFC, no
//! full-width or half-width forms, only IdentifierClass code points (letters,
//! digits, printable ASCII; no spaces, symbols, controls or default-ignorable
//! code points), and the Bidi Rule. On top of PRECIS, a name may not contain
//! zero-width joiners or non-joiners, byte-order marks or bidirectional
//! controls anywhere, and may not start with a combining mark. Names are
//! refused, never rewritten: a client's own name must stay byte-for-byte
//! the one it sent.
//!
//! Two names that look alike are one name: [`skeleton`] is the UTS #39
//! confusable skeleton of the name, folded to lower case, and the hub's name
//! space is indexed by it, so "alice", "Alice" and "аlice" (Cyrillic а)
//! cannot be online, or registered, at once.

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCasePreserved;
use unicode_normalization::char::is_combining_mark;

/// Longest name the hub accepts from any dialect, in bytes; each dialect may
/// be stricter.
pub const MAX_NAME: usize = 64;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// A code point refused anywhere in a name (invisible, joiner, BOM,
    /// bidirectional control).
    Forbidden(char),
    /// The name starts with a combining mark (it would attach to whatever
    /// is written before it).
    LeadingMark,
    /// PRECIS refuses it, or would change it (not NFC, width forms...).
    NotPrecis,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "empty name"),
            NameError::TooLong => write!(f, "name longer than {MAX_NAME} bytes"),
            NameError::Forbidden(c) => write!(f, "U+{:04X} is not allowed in a name", *c as u32),
            NameError::LeadingMark => write!(f, "a name cannot start with a combining mark"),
            NameError::NotPrecis => {
                write!(f, "not a PRECIS UsernameCasePreserved identifier in NFC")
            }
        }
    }
}

/// Code points refused anywhere, whatever PRECIS's context rules allow:
/// zero-width (non-)joiners, byte-order mark / zero-width no-break space,
/// and every bidirectional control.
fn forbidden(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{061C}'
            | '\u{FEFF}'
            | '\u{180E}'
    ) || c.is_control()
        || c.is_whitespace()
}

/// Check `name` against the policy.
pub fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    if let Some(c) = name.chars().find(|c| forbidden(*c)) {
        return Err(NameError::Forbidden(c));
    }
    if name.chars().next().is_some_and(is_combining_mark) {
        return Err(NameError::LeadingMark);
    }
    match UsernameCasePreserved::enforce(name) {
        Ok(enforced) if enforced == name => Ok(()),
        _ => Err(NameError::NotPrecis),
    }
}

/// The keys under which a name is unique; two names clash when they share
/// one. The first is UTS #39's skeleton of the lower-cased name (its advice
/// for case-insensitive identifiers: "ALICE" is "alice"); the second also
/// takes the skeleton before lower-casing, because upper-case letters have
/// look-alikes of their own ("AIice", with a capital I, is "Alice").
pub fn skeletons(name: &str) -> [String; 2] {
    let sk = |s: &str| -> String { unicode_security::skeleton(s).collect() };
    [sk(&name.to_lowercase()), sk(&sk(name).to_lowercase())]
}

/// Whether two names clash (share a skeleton).
pub fn confusable(a: &str, b: &str) -> bool {
    let (a, b) = (skeletons(a), skeletons(b));
    a.iter().any(|k| b.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for n in [
            "alice",
            "Bob_42",
            "zoé",
            "Łukasz",
            "山田",
            "user.name-x",
            "a!b#c",
            "Ärger",
            "Δημήτρης",
        ] {
            assert_eq!(check(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn invisible_and_directional_tricks_are_refused() {
        let cases = [
            ("", NameError::Empty),
            ("ali\u{200B}ce", NameError::Forbidden('\u{200B}')),
            ("ali\u{200D}ce", NameError::Forbidden('\u{200D}')),
            ("ali\u{200C}ce", NameError::Forbidden('\u{200C}')),
            ("\u{FEFF}alice", NameError::Forbidden('\u{FEFF}')),
            ("alice\u{202E}", NameError::Forbidden('\u{202E}')),
            ("\u{2067}alice", NameError::Forbidden('\u{2067}')),
            ("ali\u{2060}ce", NameError::Forbidden('\u{2060}')),
            ("al ice", NameError::Forbidden(' ')),
            ("alice\u{7}", NameError::Forbidden('\u{7}')),
            ("\u{301}alice", NameError::LeadingMark),
            ("\u{301}", NameError::LeadingMark),
        ];
        for (n, why) in cases {
            assert_eq!(check(n), Err(why), "{n:?}");
        }
    }

    #[test]
    fn names_not_in_precis_form_are_refused_not_rewritten() {
        for n in [
            "zoe\u{301}",        // NFD: NFC would change it
            "ｂｏｂ",            // full-width: width mapping would change it
            "bob\u{2665}",       // a symbol
            "\u{2163}",          // Roman numeral four (compatibility)
            "\u{AD}alice",       // soft hyphen: default ignorable
            "abc\u{E0001}",      // language tag
            "\u{05D0}a\u{05D1}", // Hebrew and Latin mixed: the Bidi Rule
        ] {
            assert!(check(n).is_err(), "{n:?} should be refused");
        }
        assert_eq!(check(&"a".repeat(MAX_NAME)), Ok(()));
        assert_eq!(check(&"a".repeat(MAX_NAME + 1)), Err(NameError::TooLong));
    }

    #[test]
    fn look_alikes_clash() {
        for n in [
            "alice",
            "Alice",
            "ALICE",
            "\u{430}lice",
            "AIice",
            "a\u{13DE}ice",
        ] {
            assert!(confusable(n, "alice"), "{n:?}");
        }
        assert!(confusable("paypal", "\u{440}\u{430}y\u{440}al"));
        assert!(confusable("rn", "m"));
        assert!(confusable("bob1", "bobl"));
        for (a, b) in [
            ("alice", "alicia"),
            ("u10", "u11"),
            ("bob", "rob"),
            ("f1", "f2"),
        ] {
            assert!(!confusable(a, b), "{a} {b}");
        }
    }
}
