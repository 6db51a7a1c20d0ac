//! The Python regular expressions of DFloat11's `pattern_dict` (such as
//! `model\.layers\.\d+\.mlp`), matched as Python's `re.fullmatch` does.
//!
//! The `regex` crate matches in time linear in the text whatever the
//! pattern, so a hostile config cannot stall the reader; the pattern is
//! anchored as `^(?:...)$` for full-match semantics. Its syntax covers what
//! these patterns use (literals, escapes, classes, groups, alternation,
//! repetition); constructs it lacks (backreferences, lookaround) are
//! reported as errors rather than matched wrongly.

/// A compiled pattern.
#[derive(Debug)]
pub struct Regex(regex::Regex);

impl Regex {
    /// Compiles `pattern`; the error names what is unsupported or malformed.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(Regex).map_err(|e| e.to_string())
    }

    /// True if the whole of `text` matches (Python's `re.fullmatch`).
    pub fn full_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).unwrap().full_match(t)
    }

    #[test]
    fn full_match_semantics() {
        assert!(m(r"model\.layers\.\d+\.mlp", "model.layers.12.mlp"));
        assert!(!m(r"model\.layers\.\d+\.mlp", "model.layers.12.mlp.up_proj"));
        assert!(!m(r"layers\.\d+", "model.layers.1"));
        assert!(!m(r"model\.layers\.\d+\.mlp", "model.layers..mlp"));
        assert!(!m(r"model\.layers\.\d+\.mlp", "modelXlayers.1.mlp"));
        assert!(m(r"model\.(embed_tokens|norm)", "model.norm"));
        assert!(m(r"a(?:bc)*d", "abcbcd"));
        assert!(m(r"x[0-9a-f]{2,3}", "x1f"));
        assert!(!m(r"x[^0-9]", "x1"));
        assert!(m(r"^a.*b$", "a..b"));
        assert!(m(r"(a|ab)c", "abc"));
        assert!(m(r"a|ab", "ab"));
        assert!(m(r"lm_head|model\.embed_tokens", "model.embed_tokens"));
        assert!(!m(r"lm_head|model\.embed_tokens", "lm_head.x"));
        assert!(m(r"[^.]+\.w", "abc.w"));
        assert!(Regex::new(r"(a").is_err());
        assert!(Regex::new(r"(a)\1").is_err());
        assert!(Regex::new(r"(?=x)").is_err());
        assert!(Regex::new(r"*a").is_err());
    }

    #[test]
    fn pathological_pattern_finishes() {
        // Exponential for a backtracking matcher; linear here.
        let text = "a".repeat(10_000);
        assert!(!m(r"(a*)*b", &text));
        assert!(m(r"(a*)*", &text));
        assert!(m(r"(a|aa)+", &text));
    }
}
