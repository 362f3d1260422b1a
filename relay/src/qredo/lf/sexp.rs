//! Canonical S-expressions as Lingua Franca writes them: an atom is `<decimal length>:`
//! followed by that many bytes, a list is `(` … `)`, nothing else (no white space, no
//! display hints). Canonical: the length has no sign and no leading zero (`0:` is the
//! empty atom), so every expression has exactly one spelling and
//! `encode(parse(b)) == b` for every accepted `b`.
//!
//! Parsing is bounded by [`Limits`] (nesting depth, atom length, total size, node count)
//! and never panics; it is recursive, but only to [`Limits::max_depth`].

use super::LfError;

/// Bounds on what [`parse`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest list nesting (the outermost list is depth 1).
    pub max_depth: usize,
    /// Longest atom, bytes.
    pub max_atom: usize,
    /// Longest whole expression, bytes.
    pub max_total: usize,
    /// Most atoms and lists in one expression.
    pub max_nodes: usize,
}

impl Default for Limits {
    /// 32 levels (a `create` request needs 11), atoms and expressions up to 64 KiB,
    /// 4096 nodes.
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_atom: 64 * 1024,
            max_total: 64 * 1024,
            max_nodes: 4096,
        }
    }
}

/// One S-expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sexp {
    /// An octet string.
    Atom(Vec<u8>),
    /// A list of expressions.
    List(Vec<Self>),
}

impl Sexp {
    /// The atom's bytes, if this is an atom.
    pub fn as_atom(&self) -> Option<&[u8]> {
        match self {
            Self::Atom(a) => Some(a),
            Self::List(_) => None,
        }
    }

    /// The list's items, if this is a list.
    pub fn as_list(&self) -> Option<&[Self]> {
        match self {
            Self::List(l) => Some(l),
            Self::Atom(_) => None,
        }
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Atom(a) => write_atom(a, out),
            Self::List(items) => {
                out.push(b'(');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b')');
            }
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Appends `<len>:<bytes>`.
pub fn write_atom(atom: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(atom.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(atom);
}

/// Parses exactly one expression filling all of `input`.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Sexp, LfError> {
    if input.len() > limits.max_total {
        return Err(LfError::TooLarge);
    }
    let mut p = Parser {
        input,
        pos: 0,
        nodes: 0,
        limits,
    };
    let sexp = p.expr(0)?;
    if p.pos != input.len() {
        return Err(LfError::TrailingBytes);
    }
    Ok(sexp)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: usize,
    limits: &'a Limits,
}

impl Parser<'_> {
    fn expr(&mut self, depth: usize) -> Result<Sexp, LfError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(LfError::TooManyNodes);
        }
        match self.input.get(self.pos) {
            None => Err(LfError::Truncated),
            Some(b'(') => {
                if depth + 1 > self.limits.max_depth {
                    return Err(LfError::TooDeep);
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    match self.input.get(self.pos) {
                        None => return Err(LfError::Truncated),
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Sexp::List(items));
                        }
                        Some(_) => items.push(self.expr(depth + 1)?),
                    }
                }
            }
            Some(b')') => Err(LfError::UnexpectedByte),
            Some(_) => self.atom().map(Sexp::Atom),
        }
    }

    fn atom(&mut self) -> Result<Vec<u8>, LfError> {
        let start = self.pos;
        let mut len: usize = 0;
        loop {
            let Some(&b) = self.input.get(self.pos) else {
                return Err(LfError::Truncated);
            };
            match b {
                b'0'..=b'9' => {
                    // No leading zero (canonical), at most 9 digits (no overflow).
                    if self.pos > start && self.input[start] == b'0' {
                        return Err(LfError::BadLength);
                    }
                    if self.pos - start >= 9 {
                        return Err(LfError::BadLength);
                    }
                    len = len * 10 + usize::from(b - b'0');
                    self.pos += 1;
                }
                b':' if self.pos > start => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(LfError::UnexpectedByte),
            }
        }
        if len > self.limits.max_atom {
            return Err(LfError::AtomTooLong);
        }
        let end = self.pos.checked_add(len).ok_or(LfError::Truncated)?;
        let bytes = self.input.get(self.pos..end).ok_or(LfError::Truncated)?;
        self.pos = end;
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(b: &[u8]) -> Result<Sexp, LfError> {
        parse(b, &Limits::default())
    }

    #[test]
    fn atoms_and_lists_round_trip() {
        for case in [
            &b"0:"[..],
            b"3:abc",
            b"()",
            b"(1:a(0:)())",
            b"(7:b\x00\x00\x00\x03\x00\x00)",
        ] {
            assert_eq!(p(case).expect("parses").encode(), case);
        }
        assert_eq!(p(b"10:0123456789"), Ok(Sexp::Atom(b"0123456789".to_vec())));
    }

    #[test]
    fn refusals_are_exact() {
        assert_eq!(p(b""), Err(LfError::Truncated));
        assert_eq!(p(b"("), Err(LfError::Truncated));
        assert_eq!(p(b"3:ab"), Err(LfError::Truncated));
        assert_eq!(p(b"3"), Err(LfError::Truncated));
        assert_eq!(p(b"01:a"), Err(LfError::BadLength));
        assert_eq!(p(b"1234567890:"), Err(LfError::BadLength));
        assert_eq!(p(b":a"), Err(LfError::UnexpectedByte));
        assert_eq!(p(b"-1:a"), Err(LfError::UnexpectedByte));
        assert_eq!(p(b")"), Err(LfError::UnexpectedByte));
        assert_eq!(p(b"( )"), Err(LfError::UnexpectedByte));
        assert_eq!(p(b"()()"), Err(LfError::TrailingBytes));
        assert_eq!(p(b"1:a "), Err(LfError::TrailingBytes));
        let deep = [vec![b'('; 33], vec![b')'; 33]].concat();
        assert_eq!(p(&deep), Err(LfError::TooDeep));
        let ok = [vec![b'('; 32], vec![b')'; 32]].concat();
        assert!(p(&ok).is_ok());
        let small = Limits {
            max_atom: 4,
            max_total: 16,
            max_nodes: 3,
            ..Limits::default()
        };
        assert_eq!(parse(b"5:abcde", &small), Err(LfError::AtomTooLong));
        assert_eq!(parse(&[b'x'; 17], &small), Err(LfError::TooLarge));
        assert_eq!(parse(b"(0:0:0:)", &small), Err(LfError::TooManyNodes));
        assert!(parse(b"(0:0:)", &small).is_ok());
    }
}
