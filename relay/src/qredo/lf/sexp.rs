//! Canonical S-expressions as Lingua Franca writes them: an atom is `<decimal length>:`
//! followed by that many bytes, a list is `(` … `)`, nothing else (no white space, no
//! display hints). Canonical: the length has no sign and no leading zero (`0:` is the
//! empty atom), so every expression has exactly one spelling and
//! `encode(parse(b)) == b` for every accepted `b`.
//!
//! Parsing is bounded by [`Limits`] (nesting depth, atom length, total size, node count)
//! and never panics. [`parse_flat`] is the parser: one pass, no recursion, one
//! allocation (the node vector); its [`Flat`] result lists the nodes in pre-order with
//! atoms borrowing the input, which is what the value and message decoders read.
//! [`parse`] builds an owned [`Sexp`] tree from it (recursing to at most
//! [`Limits::max_depth`]).

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
    write_len(atom.len(), out);
    out.extend_from_slice(atom);
}

/// Appends an atom's `<decimal length>:` prefix.
pub fn write_len(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.push(b':');
}

/// Parses exactly one expression filling all of `input`, into an owned tree.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Sexp, LfError> {
    parse_flat(input, limits).map(|flat| flat.root().to_sexp())
}

/// One node of a [`Flat`] expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node<'a> {
    /// An atom's bytes, borrowed from the input.
    Atom(&'a [u8]),
    /// A list: its number of items, and the nodes of its subtree (itself included), so
    /// that its next sibling is `span` nodes further on.
    List {
        /// Items (direct children).
        items: usize,
        /// Nodes in the subtree, this one included.
        span: usize,
    },
}

/// A parsed expression as its nodes in pre-order (a list, then its items' subtrees in
/// order), atoms borrowing the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flat<'a> {
    nodes: Vec<Node<'a>>,
}

impl<'a> Flat<'a> {
    /// The whole expression.
    pub fn root(&self) -> NodeRef<'_, 'a> {
        NodeRef {
            nodes: &self.nodes,
            at: 0,
        }
    }
}

/// One expression inside a [`Flat`] one.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'n, 'a> {
    nodes: &'n [Node<'a>],
    at: usize,
}

impl<'n, 'a> NodeRef<'n, 'a> {
    /// The atom's bytes, if this is an atom.
    pub fn as_atom(self) -> Option<&'a [u8]> {
        match self.nodes.get(self.at) {
            Some(Node::Atom(a)) => Some(a),
            _ => None,
        }
    }

    /// The list's items, if this is a list.
    pub fn as_list(self) -> Option<Items<'n, 'a>> {
        match self.nodes.get(self.at) {
            Some(Node::List { items, .. }) => Some(Items {
                nodes: self.nodes,
                next: self.at + 1,
                left: *items,
            }),
            _ => None,
        }
    }

    /// The owned tree of this expression.
    pub fn to_sexp(self) -> Sexp {
        match self.as_list() {
            Some(items) => {
                let mut list = Vec::with_capacity(items.len());
                list.extend(items.map(Self::to_sexp));
                Sexp::List(list)
            }
            None => Sexp::Atom(self.as_atom().unwrap_or_default().to_vec()),
        }
    }
}

/// The items of a list, in order.
#[derive(Debug, Clone)]
pub struct Items<'n, 'a> {
    nodes: &'n [Node<'a>],
    next: usize,
    left: usize,
}

impl<'n, 'a> Iterator for Items<'n, 'a> {
    type Item = NodeRef<'n, 'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let span = match self.nodes.get(self.next)? {
            Node::Atom(_) => 1,
            Node::List { span, .. } => *span,
        };
        let item = NodeRef {
            nodes: self.nodes,
            at: self.next,
        };
        self.next += span;
        self.left -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Items<'_, '_> {}

impl Sexp {
    /// The flat form of this tree (for the decoders, which read [`NodeRef`]s).
    pub fn flatten(&self) -> Flat<'_> {
        fn push<'a>(s: &'a Sexp, nodes: &mut Vec<Node<'a>>) {
            match s {
                Sexp::Atom(a) => nodes.push(Node::Atom(a)),
                Sexp::List(items) => {
                    let at = nodes.len();
                    nodes.push(Node::List {
                        items: items.len(),
                        span: 0,
                    });
                    for item in items {
                        push(item, nodes);
                    }
                    let len = nodes.len();
                    if let Some(Node::List { span, .. }) = nodes.get_mut(at) {
                        *span = len - at;
                    }
                }
            }
        }
        let mut nodes = Vec::new();
        push(self, &mut nodes);
        Flat { nodes }
    }
}

/// While a list is open, its `span` holds the index of the list enclosing it (this when
/// there is none).
const NO_LIST: usize = usize::MAX;

/// Parses exactly one expression filling all of `input`: the canonical syntax, every
/// limit, and the same refusals, for the same first offending byte, as a recursive
/// descent would give.
pub fn parse_flat<'a>(input: &'a [u8], limits: &Limits) -> Result<Flat<'a>, LfError> {
    if input.len() > limits.max_total {
        return Err(LfError::TooLarge);
    }
    // A node takes at least two bytes (`0:`, `()`); most take more.
    let mut nodes = Vec::with_capacity((input.len() / 6 + 4).min(limits.max_nodes));
    let mut pos = 0;
    let mut depth = 0;
    // The innermost open list.
    let mut open = NO_LIST;
    loop {
        // A node starts at `pos`.
        if nodes.len() >= limits.max_nodes {
            return Err(LfError::TooManyNodes);
        }
        if let Some(Node::List { items, .. }) = nodes.get_mut(open) {
            *items += 1;
        }
        match input.get(pos) {
            None => return Err(LfError::Truncated),
            Some(b'(') => {
                if depth >= limits.max_depth {
                    return Err(LfError::TooDeep);
                }
                depth += 1;
                pos += 1;
                nodes.push(Node::List {
                    items: 0,
                    span: open,
                });
                open = nodes.len() - 1;
            }
            Some(b')') => return Err(LfError::UnexpectedByte),
            Some(_) => nodes.push(Node::Atom(atom(input, &mut pos, limits)?)),
        }
        // Close lists until the next node starts or the expression ends.
        loop {
            if depth == 0 {
                return if pos == input.len() {
                    Ok(Flat { nodes })
                } else {
                    Err(LfError::TrailingBytes)
                };
            }
            match input.get(pos) {
                None => return Err(LfError::Truncated),
                Some(b')') => {
                    pos += 1;
                    depth -= 1;
                    let len = nodes.len();
                    let Some(Node::List { span, .. }) = nodes.get_mut(open) else {
                        // Unreachable: `open` is the innermost list while depth > 0.
                        return Err(LfError::UnexpectedByte);
                    };
                    open = std::mem::replace(span, len - open);
                }
                Some(_) => break,
            }
        }
    }
}

/// Reads `<len>:<bytes>` at `*pos`.
fn atom<'a>(input: &'a [u8], pos: &mut usize, limits: &Limits) -> Result<&'a [u8], LfError> {
    let start = *pos;
    let mut len: usize = 0;
    loop {
        let Some(&b) = input.get(*pos) else {
            return Err(LfError::Truncated);
        };
        match b {
            b'0'..=b'9' => {
                // No leading zero (canonical), at most 9 digits (no overflow).
                if *pos > start && input[start] == b'0' {
                    return Err(LfError::BadLength);
                }
                if *pos - start >= 9 {
                    return Err(LfError::BadLength);
                }
                len = len * 10 + usize::from(b - b'0');
                *pos += 1;
            }
            b':' if *pos > start => {
                *pos += 1;
                break;
            }
            _ => return Err(LfError::UnexpectedByte),
        }
    }
    if len > limits.max_atom {
        return Err(LfError::AtomTooLong);
    }
    let end = pos.checked_add(len).ok_or(LfError::Truncated)?;
    let bytes = input.get(*pos..end).ok_or(LfError::Truncated)?;
    *pos = end;
    Ok(bytes)
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
