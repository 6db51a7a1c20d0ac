//! A small backtracking matcher for the Python regular expressions found in
//! DFloat11's `pattern_dict` (such as `model\.layers\.\d+\.mlp`), used with
//! `fullmatch` semantics. It covers literals, escapes, `.`, classes, groups,
//! alternation and quantifiers; anything else is reported as unsupported
//! rather than matched wrongly.

#[derive(Debug)]
enum Node {
    Char(char),
    Any,
    Class { ranges: Vec<(char, char)>, negated: bool },
    Group(Vec<Vec<Node>>),
    Repeat(Box<Node>, usize, usize),
}

/// A compiled pattern.
#[derive(Debug)]
pub struct Regex(Vec<Vec<Node>>);

impl Regex {
    /// Parses `pattern`; errors name the unsupported construct.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut p = Parser { s: &chars, i: 0 };
        let alts = p.alternation()?;
        if p.i != chars.len() {
            return Err(format!("unbalanced ')' in {pattern:?}"));
        }
        Ok(Regex(alts))
    }

    /// True if the whole of `text` matches (Python's `re.fullmatch`).
    pub fn full_match(&self, text: &str) -> bool {
        let s: Vec<char> = text.chars().collect();
        self.0.iter().any(|alt| seq(alt, &s, 0, &mut |j| j == s.len()))
    }
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('0', '9'), ('a', 'z'), ('A', 'Z'), ('_', '_')];
const SPACE: &[(char, char)] = &[(' ', ' '), ('\t', '\r')];

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn alternation(&mut self) -> Result<Vec<Vec<Node>>, String> {
        let mut alts = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.i += 1;
            alts.push(self.sequence()?);
        }
        Ok(alts)
    }

    fn sequence(&mut self) -> Result<Vec<Node>, String> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            self.i += 1;
            let atom = match c {
                // Anchors are implied by full matching.
                '^' if nodes.is_empty() => continue,
                '$' if matches!(self.peek(), None | Some('|') | Some(')')) => continue,
                '.' => Node::Any,
                '\\' => self.escape()?,
                '[' => self.class()?,
                '(' => {
                    if self.peek() == Some('?') {
                        match self.s.get(self.i + 1) {
                            Some(':') => self.i += 2,
                            Some('P') if self.s.get(self.i + 2) == Some(&'<') => {
                                while self.peek().is_some_and(|c| c != '>') {
                                    self.i += 1;
                                }
                                self.i += 1;
                            }
                            _ => return Err("unsupported (?...) group".into()),
                        }
                    }
                    let inner = self.alternation()?;
                    if self.peek() != Some(')') {
                        return Err("unclosed '('".into());
                    }
                    self.i += 1;
                    Node::Group(inner)
                }
                '*' | '+' | '?' | '{' => return Err(format!("nothing to repeat before '{c}'")),
                c => Node::Char(c),
            };
            nodes.push(self.quantifier(atom)?);
        }
        Ok(nodes)
    }

    fn quantifier(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('?') => (0, 1),
            Some('{') => {
                let close = self.s[self.i..].iter().position(|&c| c == '}').ok_or("unclosed '{'")? + self.i;
                let body: String = self.s[self.i + 1..close].iter().collect();
                let num = |t: &str| t.trim().parse::<usize>().map_err(|_| format!("bad repeat {{{body}}}"));
                let (min, max) = match body.split_once(',') {
                    None => (num(&body)?, num(&body)?),
                    Some((a, "")) => (num(a)?, usize::MAX),
                    Some((a, b)) => (if a.is_empty() { 0 } else { num(a)? }, num(b)?),
                };
                self.i = close;
                (min, max)
            }
            _ => return Ok(atom),
        };
        self.i += 1;
        // Laziness does not change whether a full match exists.
        if self.peek() == Some('?') {
            self.i += 1;
        }
        Ok(Node::Repeat(Box::new(atom), min, max))
    }

    fn escape(&mut self) -> Result<Node, String> {
        let c = self.peek().ok_or("pattern ends with '\\'")?;
        self.i += 1;
        let class = |r: &[(char, char)], negated| Node::Class { ranges: r.to_vec(), negated };
        Ok(match c {
            'd' => class(DIGIT, false),
            'D' => class(DIGIT, true),
            'w' => class(WORD, false),
            'W' => class(WORD, true),
            's' => class(SPACE, false),
            'S' => class(SPACE, true),
            'n' => Node::Char('\n'),
            't' => Node::Char('\t'),
            c if c.is_ascii_alphanumeric() => return Err(format!("unsupported escape \\{c}")),
            c => Node::Char(c),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let mut negated = false;
        if self.peek() == Some('^') {
            negated = true;
            self.i += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or("unclosed '['")?;
            self.i += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                let e = self.peek().ok_or("unclosed '['")?;
                self.i += 1;
                match e {
                    'd' => {
                        ranges.extend_from_slice(DIGIT);
                        continue;
                    }
                    'w' => {
                        ranges.extend_from_slice(WORD);
                        continue;
                    }
                    's' => {
                        ranges.extend_from_slice(SPACE);
                        continue;
                    }
                    e if e.is_ascii_alphanumeric() => return Err(format!("unsupported escape \\{e} in a class")),
                    e => e,
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|&c| c != ']') {
                let hi = self.s[self.i + 1];
                self.i += 2;
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class { ranges, negated })
    }
}

fn one(n: &Node, s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match n {
        Node::Char(c) => s.get(i) == Some(c) && k(i + 1),
        Node::Any => s.get(i).is_some_and(|&c| c != '\n') && k(i + 1),
        Node::Class { ranges, negated } => {
            s.get(i).is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated) && k(i + 1)
        }
        Node::Group(alts) => alts.iter().any(|alt| seq(alt, s, i, &mut *k)),
        Node::Repeat(inner, min, max) => repeat(inner, *min, *max, s, i, 0, k),
    }
}

fn seq(nodes: &[Node], s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match nodes.split_first() {
        None => k(i),
        Some((n, rest)) => one(n, s, i, &mut |j| seq(rest, s, j, &mut *k)),
    }
}

fn repeat(
    inner: &Node,
    min: usize,
    max: usize,
    s: &[char],
    i: usize,
    count: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    // Greedy: try one more repetition first; an empty repetition cannot make progress.
    if count < max && one(inner, s, i, &mut |j| j != i && repeat(inner, min, max, s, j, count + 1, &mut *k)) {
        return true;
    }
    count >= min && k(i)
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).unwrap().full_match(t)
    }

    #[test]
    fn dfloat11_patterns() {
        assert!(m(r"model\.layers\.\d+\.mlp", "model.layers.12.mlp"));
        assert!(!m(r"model\.layers\.\d+\.mlp", "model.layers.12.mlp.up_proj"));
        assert!(!m(r"model\.layers\.\d+\.mlp", "model.layers..mlp"));
        assert!(!m(r"model\.layers\.\d+\.mlp", "modelXlayers.1.mlp"));
        assert!(m("lm_head", "lm_head"));
        assert!(m(r"model\.(embed_tokens|norm)", "model.norm"));
        assert!(m(r"a(?:bc)*d", "abcbcd"));
        assert!(m(r"x[0-9a-f]{2,3}", "x1f"));
        assert!(!m(r"x[^0-9]", "x1"));
        assert!(m(r"^a.*b$", "a..b"));
        assert!(m(r"(a|ab)c", "abc"));
    }

    #[test]
    fn unsupported_is_an_error() {
        assert!(Regex::new(r"\bx").is_err());
        assert!(Regex::new(r"(?=x)").is_err());
        assert!(Regex::new(r"(a").is_err());
        assert!(Regex::new(r"*a").is_err());
    }
}
