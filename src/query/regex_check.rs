//! A static check of the regular expressions a query sends to MongoDB.
//!
//! In: a pattern from an ad-hoc filter (`=~`, `!~`) or a pipeline's `$regex`,
//! `$regexMatch`, `$regexFind`, `$regexFindAll`. Out: `Ok`, or the reason it
//! is refused and what to write instead.
//!
//! MongoDB runs regular expressions with PCRE, a backtracking engine: a
//! pattern such as `(a+)+$` takes time exponential in the length of a value
//! it fails to match, and one such query can pin a server core. Refused here:
//! - a repetition that can repeat without bound (`*`, `+`, `{n,}`, or `{n,m}`
//!   with m > [`MAX_COUNTED_REPEAT`]) of a group that itself holds one, like
//!   `(a+)+`, `(a*b?)*`, `(.*,){1000}`;
//! - backreferences (`\1`, `\k<name>`, `\g1`): matching them is NP-hard;
//! - patterns longer than [`MAX_PATTERN_LEN`].
//!
//! Not every slow pattern is caught (overlapping alternatives such as
//! `(a|a)*` are not), so every aggregation the plugin runs is also bounded
//! on the server by `maxTimeMS` (the data source's query timeout).

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1_000;

/// A counted repetition `{n,m}` above this many counts as unbounded.
pub const MAX_COUNTED_REPEAT: u32 = 100;

/// How a quantifier repeats what precedes it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Repeat {
    /// `?`, `{0,1}`, `{n}` with small n…: at most [`MAX_COUNTED_REPEAT`] times.
    Bounded,
    Unbounded,
}

/// Refuses patterns that can make a backtracking engine run for ever.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "the regular expression is {} bytes long; at most {MAX_PATTERN_LEN} are accepted: use a shorter pattern or an `in` filter with the values",
            pattern.len()
        ));
    }
    let chars: Vec<char> = pattern.chars().collect();
    // One entry per open group: whether it holds an unbounded repetition.
    let mut groups: Vec<bool> = vec![false];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let mut atom_unbounded = false;
        match c {
            '\\' => {
                if let Some(reference) = backreference(&chars, i) {
                    return Err(format!(
                        "the regular expression '{pattern}' uses the backreference {reference}, which MongoDB's backtracking engine may take exponential time to match: write the alternatives out instead"
                    ));
                }
                i += 1; // the escaped character
            }
            '[' => i = skip_class(&chars, i),
            '(' => {
                groups.push(false);
                continue;
            }
            ')' => {
                if groups.len() > 1 {
                    atom_unbounded = groups.pop().unwrap_or(false);
                } else {
                    continue;
                }
            }
            _ => {}
        }
        let (repeat, after) = quantifier(&chars, i);
        i = after;
        // Possessive (`++`) and lazy (`+?`) suffixes do not change the worst case we guard.
        if let Some('+' | '?') = chars.get(i) {
            if repeat.is_some() {
                i += 1;
            }
        }
        let unbounded_here = repeat == Some(Repeat::Unbounded);
        if c == ')' && atom_unbounded && unbounded_here {
            return Err(format!(
                "the regular expression '{pattern}' repeats without bound a group that itself repeats without bound (like (a+)+); MongoDB's backtracking engine can take exponential time on a value it does not match. Remove the outer or the inner repetition (e.g. (a+)+ → a+), or anchor a simpler pattern"
            ));
        }
        if let Some(top) = groups.last_mut() {
            *top |= atom_unbounded || unbounded_here;
        }
    }
    Ok(())
}

/// A backreference starting just after a backslash at `at`, as written.
fn backreference(chars: &[char], at: usize) -> Option<String> {
    let c = *chars.get(at)?;
    let next = chars.get(at + 1).copied();
    let is_ref = match c {
        '1'..='9' => true,
        'k' => matches!(next, Some('<' | '\'' | '{')),
        'g' => matches!(next, Some('{' | '<' | '\'' | '-' | '0'..='9')),
        _ => false,
    };
    is_ref.then(|| {
        let end = (at + 4).min(chars.len());
        format!("\\{}", chars[at..end].iter().collect::<String>())
    })
}

/// The index just after the character class whose `[` is before `at`.
fn skip_class(chars: &[char], mut at: usize) -> usize {
    if chars.get(at) == Some(&'^') {
        at += 1;
    }
    // A `]` first in the class is a literal.
    if chars.get(at) == Some(&']') {
        at += 1;
    }
    while at < chars.len() {
        match chars[at] {
            '\\' => at += 2,
            ']' => return at + 1,
            '[' if chars.get(at + 1) == Some(&':') => {
                // A POSIX class such as [:alpha:] ends with its own `:]`.
                let rest: String = chars[at..].iter().collect();
                at += rest.find(":]").map_or(1, |p| rest[..p + 2].chars().count());
            }
            _ => at += 1,
        }
    }
    at
}

/// The quantifier at `at`, if any, and the index after it.
fn quantifier(chars: &[char], at: usize) -> (Option<Repeat>, usize) {
    match chars.get(at) {
        Some('*' | '+') => (Some(Repeat::Unbounded), at + 1),
        Some('?') => (Some(Repeat::Bounded), at + 1),
        Some('{') => {
            let rest: String = chars[at + 1..].iter().collect();
            let Some(close) = rest.find('}') else {
                return (None, at);
            };
            let inside = &rest[..close];
            let after = at + 1 + inside.chars().count() + 1;
            let (low, high) = match inside.split_once(',') {
                Some((low, high)) => (low.trim(), Some(high.trim())),
                None => (inside.trim(), None),
            };
            // `{` not followed by a count is a literal brace in PCRE.
            if low.parse::<u32>().is_err() && !(low.is_empty() && high.is_some()) {
                return (None, at);
            }
            let big = |n: &str| n.parse::<u32>().map_or(true, |n| n > MAX_COUNTED_REPEAT);
            let repeat = match high {
                Some("") => Repeat::Unbounded,
                Some(high) if big(high) => Repeat::Unbounded,
                None if big(low) => Repeat::Unbounded,
                _ => Repeat::Bounded,
            };
            (Some(repeat), after)
        }
        _ => (None, at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_unbounded_repetitions_are_refused() {
        for p in [
            "(a+)+$",
            "^(a*)*b",
            "(a|b+)*",
            "((ab)*c)+",
            "(x+x+)+y",
            "(?:a+){2,}",
            "(.*,){1000}",
            "(\\w+\\s?)*$",
            "([a-z]+)*!",
            "(a+)++",
            "((a+))+",
        ] {
            let e = check_regex(p).expect_err(p);
            assert!(e.contains("repeats without bound"), "{p}: {e}");
        }
    }

    #[test]
    fn ordinary_patterns_pass() {
        for p in [
            "^D|US$",
            "R",
            "^(FR|DE)$",
            "(ab)+",
            "a+b+c*",
            "(a+)?",
            "(a+){3}",
            "(a+b){1,5}",
            "[(+)]+",
            "\\(a+\\)+",
            "^/api/v[0-9]+/",
            "[]a+]*",
            "x{",
            "^(?!FR)",
            "[[:alpha:]]+",
        ] {
            assert_eq!(check_regex(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn backreferences_are_refused() {
        for p in ["(a)\\1", "(?<x>a)\\k<x>", "(a)\\g1", "(a)\\g{-1}"] {
            let e = check_regex(p).expect_err(p);
            assert!(e.contains("backreference"), "{p}: {e}");
        }
        assert_eq!(
            check_regex("\\d\\\\1"),
            Ok(()),
            "an escaped backslash then 1"
        );
    }

    #[test]
    fn long_patterns_are_refused() {
        let e = check_regex(&"a".repeat(MAX_PATTERN_LEN + 1)).unwrap_err();
        assert!(e.contains("at most 1000"), "{e}");
    }
}
