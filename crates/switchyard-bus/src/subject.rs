//! NATS subject syntax, shared by both bus implementations.
//!
//! Both [`crate::MemoryBus`] and [`crate::NatsBus`] validate subjects here before doing anything,
//! so a subject the in-memory bus accepts is one the NATS server accepts too, and vice versa; the
//! in-memory bus also uses [`matches()`] to route messages.
//!
//! The rules are those of NATS:
//! - a subject is a list of non-empty tokens separated by `.` (`switchyard.v1.query.chat`);
//! - no whitespace or control characters anywhere;
//! - a subscription pattern may use `*` as a whole token, matching exactly one token, and `>`
//!   as the whole last token, matching one or more trailing tokens;
//! - a published subject (and a reply subject) contains no wildcard token;
//! - `*` or `>` inside a longer token (`foo*`) is a literal character, as in NATS.

/// Matches exactly one token in a subscription pattern.
pub const SINGLE_WILDCARD: &str = "*";

/// Matches one or more trailing tokens; only valid as the last token of a pattern.
pub const FULL_WILDCARD: &str = ">";

/// Whether `subject` can be published to (or used as a reply subject): well-formed tokens and
/// no wildcard token.
pub fn is_valid_subject(subject: &str) -> bool {
    has_valid_tokens(subject) && subject.split('.').all(|token| token != SINGLE_WILDCARD && token != FULL_WILDCARD)
}

/// Whether `pattern` can be subscribed to: well-formed tokens, `>` only as the last token.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if !has_valid_tokens(pattern) {
        return false;
    }
    let mut tokens = pattern.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token == FULL_WILDCARD && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// Whether `queue` can name a queue group: non-empty, no whitespace or control characters.
pub fn is_valid_queue(queue: &str) -> bool {
    !queue.is_empty() && !queue.chars().any(is_forbidden)
}

/// Whether a valid `pattern` contains no wildcard token, so it matches only itself.
pub fn is_literal(pattern: &str) -> bool {
    pattern.split('.').all(|token| token != SINGLE_WILDCARD && token != FULL_WILDCARD)
}

/// Whether the subscription `pattern` matches the published `subject`.
///
/// Both are assumed valid (see [`is_valid_pattern`] and [`is_valid_subject`]); the function does
/// not allocate.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (Some(FULL_WILDCARD), Some(_)) => return true,
            (Some(SINGLE_WILDCARD), Some(_)) => {}
            (Some(expected), Some(actual)) if expected == actual => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Non-empty, no empty token (leading, trailing or double dot), no forbidden character.
fn has_valid_tokens(subject: &str) -> bool {
    !subject.is_empty() && !subject.chars().any(is_forbidden) && subject.split('.').all(|token| !token.is_empty())
}

/// Characters that would break NATS protocol framing or are never meaningful in a subject.
fn is_forbidden(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_match(pattern: &str, subject: &str, expected: bool) {
        assert!(is_valid_pattern(pattern), "pattern {pattern:?} should be valid");
        assert!(is_valid_subject(subject), "subject {subject:?} should be valid");
        assert_eq!(matches(pattern, subject), expected, "matches({pattern:?}, {subject:?})");
    }

    #[test]
    fn matching() {
        let table = [
            ("a", "a", true),
            ("a", "b", false),
            ("a.b", "a.b", true),
            ("a.b", "a", false),
            ("a", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b", true),
            ("*.b", "a.c", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.b.d", false),
            ("*.*", "a.b", true),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            ("a.>", "b.c", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("*.>", "a.b", true),
            ("*.>", "a", false),
            ("a.*.>", "a.b.c", true),
            ("a.*.>", "a.b", false),
            ("foo*", "foo*", true),
            ("foo*", "fooo", false),
            ("a.b>", "a.b>", true),
            ("a.b>", "a.bc", false),
        ];
        for (pattern, subject, expected) in table {
            check_match(pattern, subject, expected);
        }
    }

    #[test]
    fn subject_validation() {
        let table = [
            ("a", true),
            ("a.b.c", true),
            ("switchyard.v1.query.chat", true),
            ("_INBOX.abc.1", true),
            ("foo*", true),
            ("a-b_c.d:e", true),
            ("", false),
            (".", false),
            (".a", false),
            ("a.", false),
            ("a..b", false),
            ("a b", false),
            ("a\tb", false),
            ("a\r\nb", false),
            ("a.*", false),
            ("a.>", false),
            ("*", false),
            (">", false),
        ];
        for (subject, expected) in table {
            assert_eq!(is_valid_subject(subject), expected, "subject {subject:?}");
        }
    }

    #[test]
    fn pattern_validation() {
        let table = [
            ("a", true),
            ("a.*", true),
            ("*.b.*", true),
            ("a.>", true),
            (">", true),
            ("*.>", true),
            ("", false),
            ("a..b", false),
            ("a.", false),
            (".>", false),
            ("a.>.b", false),
            (">.a", false),
            ("a b.>", false),
        ];
        for (pattern, expected) in table {
            assert_eq!(is_valid_pattern(pattern), expected, "pattern {pattern:?}");
        }
    }

    #[test]
    fn queue_validation() {
        assert!(is_valid_queue("switchyard-routers"));
        assert!(is_valid_queue("q.1"));
        assert!(!is_valid_queue(""));
        assert!(!is_valid_queue("two words"));
        assert!(!is_valid_queue("line\n"));
    }

    #[test]
    fn literal_patterns() {
        assert!(is_literal("a.b"));
        assert!(is_literal("foo*"));
        assert!(!is_literal("a.*"));
        assert!(!is_literal("a.>"));
    }
}
