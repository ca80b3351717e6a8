//! Usernames: what a name may be, and when two names are the same account.
//!
//! [`normalize`] checks a name someone wants to create and returns the form
//! to store and show (Unicode NFKC, case kept). [`fold`] gives the key two
//! names are compared by (NFKC plus full case folding), so `Alice`, `ALICE`
//! and fullwidth `ａｌｉｃｅ` are one account.
//!
//! ```
//! use latchkey::username::{fold, normalize};
//!
//! assert_eq!(normalize("ａｌｉｃｅ").unwrap(), "alice");
//! assert_eq!(fold("ALICE"), fold("alice"));
//! assert!(normalize("\u{430}lice").is_err()); // Cyrillic "а" among Latin letters
//! ```

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
// The script type unicode-security's script sets are made of.
use unicode_script::Script;
use unicode_security::general_security_profile::IdentifierType;
use unicode_security::mixed_script::AugmentedScriptSet;
use unicode_security::GeneralSecurityProfile;

/// Most characters a name may have, counted after NFKC.
pub const MAX_CHARS: usize = 64;

/// Input longer than this is refused before it is normalised: NFKC can
/// shorten a name (decomposed accents compose), but never 16-fold, and this
/// keeps hostile input from costing more than a small name does.
const MAX_INPUT_CHARS: usize = MAX_CHARS * 16;

/// Why a name was refused. Each message names the rule and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Nothing given.
    #[error("username is empty: give 1 to 64 letters or digits")]
    Empty,
    /// More than [`MAX_CHARS`] characters after NFKC.
    #[error("username is {0} characters long after Unicode normalisation; use at most 64")]
    TooLong(usize),
    /// Starts with `.`, `-` or a combining mark.
    #[error("username starts with {0:?}: start it with a letter, a digit, '_' or '@'")]
    BadStart(char),
    /// A character outside letters, digits and `._-@`.
    #[error("username contains {0:?}: use only letters, digits, '.', '_', '-' and '@'")]
    BadChar(char),
    /// Letters of scripts that are not written together, e.g. Latin with
    /// Cyrillic: such names can pass for another user's.
    #[error("username mixes scripts ({0}): write it in one script, e.g. all Latin letters")]
    MixedScripts(String),
}

/// Checks a name for creation and returns its display form: NFKC, case kept.
///
/// The rules: 1 to 64 characters after NFKC; letters (with their combining
/// marks), digits and `.`, `_`, `-`, `@`; not starting with `.` or `-`; no
/// invisible (default-ignorable) characters; and the letters of one script,
/// as UTS 39's "highly restrictive" level allows (Latin may go with Han,
/// Kana or Hangul, as Japanese, Chinese and Korean are written, but not with
/// Cyrillic or Greek, whose look-alikes spoof Latin names).
pub fn normalize(raw: &str) -> Result<String, UsernameError> {
    if raw.is_empty() {
        return Err(UsernameError::Empty);
    }
    let input_chars = raw.chars().count();
    if input_chars > MAX_INPUT_CHARS {
        return Err(UsernameError::TooLong(input_chars));
    }
    let name: String = raw.nfkc().collect();
    let chars = name.chars().count();
    if chars > MAX_CHARS {
        return Err(UsernameError::TooLong(chars));
    }
    let mut it = name.chars();
    let Some(first) = it.next() else {
        return Err(UsernameError::Empty);
    };
    if first == '.' || first == '-' || is_mark(first) {
        return Err(UsernameError::BadStart(first));
    }
    for c in name.chars() {
        let ok = (c.is_alphanumeric() || is_mark(c) || "._-@".contains(c))
            && c.identifier_type() != Some(IdentifierType::Default_Ignorable);
        if !ok {
            return Err(UsernameError::BadChar(c));
        }
    }
    if let Some(scripts) = mixed_scripts(&name) {
        return Err(UsernameError::MixedScripts(scripts));
    }
    Ok(name)
}

/// The key names are compared by: Unicode's compatibility caseless match
/// (NFKD(casefold(NFKD(casefold(NFD(x)))))), composed to NFKC to keep it
/// short. Full case folding (not `to_lowercase`) so `Straße` and `STRASSE`
/// meet; `caseless` is the unicode-rs implementation of exactly this
/// algorithm, on the same normalisation crate as [`normalize`].
pub fn fold(name: &str) -> String {
    name.chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkc()
        .collect()
}

fn is_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
}

/// `Some("Latin, Cyrillic")` when the name's letters are not of one
/// writing system (UTS 39 restriction level worse than highly restrictive).
/// Digits and `._-@` belong to every script and never count.
fn mixed_scripts(name: &str) -> Option<String> {
    let all = AugmentedScriptSet::for_str(name);
    if !all.is_empty() {
        return None;
    }
    // Highly restrictive: what is left beside Latin is Han with Bopomofo,
    // Japanese or Korean.
    let mut rest = AugmentedScriptSet::default();
    for c in name.chars() {
        let set = AugmentedScriptSet::for_char(c);
        if !set.base.contains_script(Script::Latin) {
            rest.intersect_with(set);
        }
    }
    if rest.hanb || rest.jpan || rest.kore {
        return None;
    }
    let mut seen: Vec<&'static str> = Vec::new();
    for c in name.chars() {
        let set = AugmentedScriptSet::for_char(c);
        if set.is_all() {
            continue;
        }
        if let Some(script) = set.base.iter().next() {
            let script = script.full_name();
            if !seen.contains(&script) {
                seen.push(script);
            }
        }
    }
    Some(seen.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_examples() {
        assert_eq!(normalize("alice").unwrap(), "alice");
        assert_eq!(normalize("Alice").unwrap(), "Alice");
        assert_eq!(normalize("ａｌｉｃｅ").unwrap(), "alice");
        assert_eq!(normalize("ＡＬＩＣＥ").unwrap(), "ALICE");
        for same in ["Alice", "ALICE", "ａｌｉｃｅ", "ＡｌＩｃＥ"] {
            assert_eq!(fold(same), "alice", "{same}");
        }
        assert!(matches!(
            normalize("\u{430}lice"),
            Err(UsernameError::MixedScripts(s)) if s.contains("Latin") && s.contains("Cyrillic")
        ));
    }

    #[test]
    fn length_is_counted_after_nfkc() {
        assert!(normalize(&"a".repeat(64)).is_ok());
        assert_eq!(normalize(&"a".repeat(65)), Err(UsernameError::TooLong(65)));
        // 64 decomposed "é" are 128 code points but 64 characters in NFKC.
        let decomposed = "e\u{301}".repeat(64);
        assert_eq!(decomposed.chars().count(), 128);
        assert_eq!(normalize(&decomposed).unwrap(), "é".repeat(64));
        // A ligature grows: "ﬃ" is three characters after NFKC.
        assert!(normalize(&"ﬃ".repeat(21)).is_ok());
        assert_eq!(normalize(&"ﬃ".repeat(22)), Err(UsernameError::TooLong(66)));
        assert!(matches!(
            normalize(&"a".repeat(10_000)),
            Err(UsernameError::TooLong(_))
        ));
        assert_eq!(normalize(""), Err(UsernameError::Empty));
    }

    #[test]
    fn characters_and_start() {
        for ok in [
            "x",
            "a.b-c_d@example.com",
            "Zoë",
            "007",
            "bob@example.org",
            "_x",
            "user_1",
            "Straße",
        ] {
            assert!(normalize(ok).is_ok(), "{ok}: {:?}", normalize(ok));
        }
        assert_eq!(normalize(".x"), Err(UsernameError::BadStart('.')));
        assert_eq!(normalize("-x"), Err(UsernameError::BadStart('-')));
        assert!(normalize("\u{301}x").is_err());
        for bad in [
            "a b",
            "a/b",
            "a\nb",
            "a\0b",
            "a+b",
            "a:b",
            "a\u{200b}b",
            "a\u{115f}b",
        ] {
            assert!(
                matches!(normalize(bad), Err(UsernameError::BadChar(_))),
                "{bad:?}: {:?}",
                normalize(bad)
            );
        }
        // Fullwidth "．" is "." after NFKC, and so refused at the start.
        assert_eq!(normalize("．x"), Err(UsernameError::BadStart('.')));
    }

    #[test]
    fn one_script_is_fine_mixing_is_not() {
        for ok in [
            "Σωκράτης",
            "αλέξανδρος",
            "алиса",
            "Борис_1984",
            "田中",
            "たなかtaro",
            "김철수",
            "नमस्ते",
        ] {
            assert!(normalize(ok).is_ok(), "{ok}: {:?}", normalize(ok));
        }
        for bad in [
            "\u{430}lice",  // Cyrillic а
            "p\u{430}ypal", // Cyrillic а inside
            "\u{3bf}pen",   // Greek ο
            "алиса\u{3b1}", // Cyrillic with Greek α
        ] {
            assert!(
                matches!(normalize(bad), Err(UsernameError::MixedScripts(_))),
                "{bad:?}: {:?}",
                normalize(bad)
            );
        }
    }

    #[test]
    fn folding() {
        assert_eq!(fold("ａｌｉｃｅ"), "alice");
        assert_eq!(fold("Straße"), fold("STRASSE"));
        assert_eq!(fold("ΣΩΚΡΆΤΗΣ"), fold("σωκράτης"));
        assert_eq!(fold("e\u{301}"), fold("É"));
        assert_ne!(fold("alice"), fold("\u{430}lice"));
        for name in ["Alice", "ＡＬＩＣＥ", "Straße", "ǅemal"] {
            assert_eq!(fold(&fold(name)), fold(name), "{name}");
        }
    }

    #[test]
    fn messages_are_one_line() {
        for e in [
            UsernameError::Empty,
            UsernameError::TooLong(65),
            UsernameError::BadStart('.'),
            UsernameError::BadChar('/'),
            UsernameError::MixedScripts("Latin, Cyrillic".into()),
        ] {
            let text = e.to_string();
            assert!(
                !text.contains('\n') && text.starts_with("username"),
                "{text}"
            );
        }
    }
}
