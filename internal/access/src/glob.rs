//! Topic and group patterns: `*` matches any run of characters (dots and the
//! empty run included); every other character stands for itself.
//!
//! There is deliberately no `?`, no character class and no escape: names of
//! topics and groups never contain `*`, so nothing needs escaping, and a
//! smaller language is one an operator can read at a glance in a grant.

/// Whether `text` matches `pattern`.
///
/// Linear-space, worst case O(len(pattern) × len(text)): on a mismatch only
/// the most recent `*` is retried one character further on, because any
/// earlier `*` could only absorb what the later one already can.
///
/// Works on bytes: `*` is ASCII and literals are whole UTF-8 sequences, so a
/// literal can only match at a character boundary and the result is the same
/// as matching characters.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was, and where in `text` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            // Let the last star swallow one more character and retry.
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    // The text is used up: only stars may remain.
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether the pattern matches every name (it is made of stars only), which
/// is what an action on "all topics" or "all groups" requires of a grant.
pub fn is_universal(pattern: &str) -> bool {
    !pattern.is_empty() && pattern.bytes().all(|c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, written the obvious (exponential) way.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|skip| reference(rest, &t[skip..])),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    #[test]
    fn examples() {
        assert!(matches("*", ""));
        assert!(matches("*", "orders.new"));
        assert!(matches("orders.*", "orders.new"));
        assert!(matches("orders.*", "orders."));
        assert!(matches("orders.*", "orders.eu.new"));
        assert!(!matches("orders.*", "orders"));
        assert!(!matches("orders.*", "billing.orders.new"));
        assert!(matches("*.dlq", "orders.new.dlq"));
        assert!(matches("a*b*c", "abc"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders2"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
        assert!(matches("caf*é", "café"));
        assert!(matches("**", "x"));
    }

    #[test]
    fn universal() {
        assert!(is_universal("*"));
        assert!(is_universal("**"));
        assert!(!is_universal(""));
        assert!(!is_universal("*.x"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        // A small alphabet so that stars, repeats and near misses are common.
        #[test]
        fn agrees_with_reference(p in "[ab.*é]{0,8}", t in "[ab.é]{0,10}") {
            let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
            prop_assert_eq!(matches(&p, &t), reference(&pc, &tc), "pattern {:?} text {:?}", p, t);
        }

        #[test]
        fn a_name_matches_itself_and_star(t in "[a-z.\\-_0-9]{0,20}") {
            prop_assert!(matches(&t, &t));
            prop_assert!(matches("*", &t));
        }
    }
}
