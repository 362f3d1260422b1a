//! The RPC envelope (`QredoServiceInvoker.m`, `QredoWireFormat.m`):
//!
//! ```text
//! request  = ( version version (1:s b<returnChannelID> b<correlationID> '<Service> '<op>
//!                (1:o S<appId> b<appSecret> argument…) ) )
//! response = ( version version (1:s b<returnChannelID> b<correlationID> '<Service> '<op>
//!                (1:r value…)                                  success
//!              | (1:R (1:[ (I<code> S<message> (S<key> S<value>)…)… ))  failure
//!            ) )
//! version  = 7:b followed by major, minor, patch as u16 big-endian (protocol 0.3.0)
//! ```
//!
//! A marshalled object outside the RPC (the SDK's `marshalObject:includeHeader:YES`,
//! e.g. its keychain) is `( version version value )`: [`decode_object`].

use super::LfError;
use super::sexp::{Items, Limits, NodeRef, parse_flat};
use super::value::{Value, decode_all, write_list_start, write_marked};

/// A protocol or release version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Patch.
    pub patch: u16,
}

/// The protocol version the SDK speaks and the relay answers with: 0.3.0.
pub const PROTOCOL_VERSION: Version = Version {
    major: 0,
    minor: 3,
    patch: 0,
};

impl Version {
    fn bytes(&self) -> [u8; 6] {
        let (a, b, c) = (
            self.major.to_be_bytes(),
            self.minor.to_be_bytes(),
            self.patch.to_be_bytes(),
        );
        [a[0], a[1], b[0], b[1], c[0], c[1]]
    }

    fn decode(node: NodeRef<'_, '_>) -> Result<Self, LfError> {
        match node.as_atom() {
            Some([b'b', a0, a1, b0, b1, c0, c1]) => Ok(Self {
                major: u16::from_be_bytes([*a0, *a1]),
                minor: u16::from_be_bytes([*b0, *b1]),
                patch: u16::from_be_bytes([*c0, *c1]),
            }),
            _ => Err(LfError::BadHeader),
        }
    }
}

/// The interchange header both directions carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interchange {
    /// Protocol version.
    pub protocol: Version,
    /// Release version.
    pub release: Version,
    /// The client's return channel (its client id).
    pub return_channel: Vec<u8>,
    /// The request's correlation id (16 random bytes from the SDK).
    pub correlation: Vec<u8>,
    /// Service name (`Rendezvous`, `Conversations`, `Ping`).
    pub service: String,
    /// Operation name (`create`, `respond`, ...).
    pub operation: String,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Envelope.
    pub header: Interchange,
    /// The invocation header's app id.
    pub app_id: String,
    /// The invocation header's app secret.
    pub app_secret: Vec<u8>,
    /// The operation's arguments, in order.
    pub args: Vec<Value>,
}

/// One item of a failure result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Numeric code (tryst's codes: `crate::qredo::Failure`).
    pub code: i32,
    /// Human-readable message.
    pub message: String,
    /// `(key, value)` debug pairs.
    pub debug: Vec<(String, String)>,
}

/// The result of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `r`: the result values (one for every operation the SDK has).
    Success(Vec<Value>),
    /// `R`: error items.
    Failure(Vec<ErrorInfo>),
}

/// One decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Envelope (echoing the request's).
    pub header: Interchange,
    /// The result.
    pub outcome: Outcome,
}

fn write_interchange(h: &Interchange, out: &mut Vec<u8>) {
    out.push(b'(');
    write_marked(b'b', &h.protocol.bytes(), out);
    write_marked(b'b', &h.release.bytes(), out);
    write_list_start(b's', out);
    write_marked(b'b', &h.return_channel, out);
    write_marked(b'b', &h.correlation, out);
    write_marked(b'\'', h.service.as_bytes(), out);
    write_marked(b'\'', h.operation.as_bytes(), out);
}

impl Request {
    /// The canonical bytes, as the SDK's service invoker writes them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        write_interchange(&self.header, &mut out);
        write_list_start(b'o', &mut out);
        write_marked(b'S', self.app_id.as_bytes(), &mut out);
        write_marked(b'b', &self.app_secret, &mut out);
        for arg in &self.args {
            arg.encode_into(&mut out);
        }
        out.extend_from_slice(b")))");
        out
    }
}

impl Response {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        write_interchange(&self.header, &mut out);
        match &self.outcome {
            Outcome::Success(values) => {
                write_list_start(b'r', &mut out);
                for v in values {
                    v.encode_into(&mut out);
                }
            }
            Outcome::Failure(errors) => {
                write_list_start(b'R', &mut out);
                write_list_start(b'[', &mut out);
                for e in errors {
                    out.push(b'(');
                    write_marked(b'I', &e.code.to_be_bytes(), &mut out);
                    write_marked(b'S', e.message.as_bytes(), &mut out);
                    for (k, v) in &e.debug {
                        out.push(b'(');
                        write_marked(b'S', k.as_bytes(), &mut out);
                        write_marked(b'S', v.as_bytes(), &mut out);
                        out.push(b')');
                    }
                    out.push(b')');
                }
                out.push(b')');
            }
        }
        out.extend_from_slice(b")))");
        out
    }
}

/// What could be read of an envelope before it went wrong: enough for the relay to
/// address a failure result to the right correlation id when only the body is bad.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Partial {
    /// The interchange header, if it was read.
    pub header: Option<Interchange>,
}

fn marked_list<'n, 'a>(node: NodeRef<'n, 'a>, marker: u8) -> Result<Items<'n, 'a>, LfError> {
    let mut items = node.as_list().ok_or(LfError::BadHeader)?;
    match items.next() {
        Some(m) if m.as_atom() == Some(&[marker][..]) => Ok(items),
        _ => Err(LfError::BadHeader),
    }
}

fn symbol(node: NodeRef<'_, '_>) -> Result<String, LfError> {
    match Value::decode_node(node) {
        Ok(Value::Symbol(s)) => Ok(s),
        _ => Err(LfError::BadHeader),
    }
}

fn bytes(node: NodeRef<'_, '_>) -> Result<Vec<u8>, LfError> {
    match node.as_atom() {
        Some([b'b', rest @ ..]) => Ok(rest.to_vec()),
        _ => Err(LfError::BadHeader),
    }
}

/// The next item of a list whose length was checked.
fn item<'n, 'a>(items: &mut Items<'n, 'a>, e: LfError) -> Result<NodeRef<'n, 'a>, LfError> {
    items.next().ok_or(e)
}

/// Splits `(version version (s ...))` into the interchange header and the items after
/// its four fields.
fn read_interchange<'n, 'a>(top: NodeRef<'n, 'a>) -> Result<(Interchange, Items<'n, 'a>), LfError> {
    const E: LfError = LfError::BadHeader;
    let mut top = top.as_list().ok_or(E)?;
    if top.len() != 3 {
        return Err(E);
    }
    let protocol = Version::decode(item(&mut top, E)?)?;
    let release = Version::decode(item(&mut top, E)?)?;
    let mut items = marked_list(item(&mut top, E)?, b's')?;
    if items.len() < 4 {
        return Err(E);
    }
    Ok((
        Interchange {
            protocol,
            release,
            return_channel: bytes(item(&mut items, E)?)?,
            correlation: bytes(item(&mut items, E)?)?,
            service: symbol(item(&mut items, E)?)?,
            operation: symbol(item(&mut items, E)?)?,
        },
        items,
    ))
}

/// Reads the one item after a request's interchange header, `(o S<appId> b<appSecret>
/// argument…)`.
fn read_invocation(mut rest: Items<'_, '_>) -> Result<(String, Vec<u8>, Vec<Value>), LfError> {
    const E: LfError = LfError::BadHeader;
    if rest.len() != 1 {
        return Err(E);
    }
    let mut items = marked_list(item(&mut rest, E)?, b'o')?;
    if items.len() < 2 {
        return Err(E);
    }
    let Ok(Value::Str(app_id)) = Value::decode_node(item(&mut items, E)?) else {
        return Err(E);
    };
    let app_secret = bytes(item(&mut items, E)?)?;
    Ok((app_id, app_secret, decode_all(items)?))
}

/// Decodes a request. On error, [`Partial`] holds the header if it was readable.
pub fn decode_request(input: &[u8], limits: &Limits) -> Result<Request, (LfError, Partial)> {
    let flat = parse_flat(input, limits).map_err(|e| (e, Partial::default()))?;
    let (header, rest) = read_interchange(flat.root()).map_err(|e| (e, Partial::default()))?;
    match read_invocation(rest) {
        Ok((app_id, app_secret, args)) => Ok(Request {
            header,
            app_id,
            app_secret,
            args,
        }),
        Err(e) => Err((
            e,
            Partial {
                header: Some(header),
            },
        )),
    }
}

/// Decodes a response (the client side; used by tests and tools).
pub fn decode_response(input: &[u8], limits: &Limits) -> Result<Response, LfError> {
    let flat = parse_flat(input, limits)?;
    let (header, mut rest) = read_interchange(flat.root())?;
    if rest.len() != 1 {
        return Err(LfError::BadHeader);
    }
    let mut items = item(&mut rest, LfError::BadHeader)?
        .as_list()
        .ok_or(LfError::BadHeader)?;
    let status = items.next().ok_or(LfError::BadHeader)?;
    let outcome = match status.as_atom() {
        Some(b"r") => Outcome::Success(decode_all(items)?),
        Some(b"R") => {
            if items.len() != 1 {
                return Err(LfError::BadHeader);
            }
            let mut errors = Vec::new();
            for entry in marked_list(item(&mut items, LfError::BadHeader)?, b'[')? {
                const E: LfError = LfError::BadValue;
                let mut fields = entry.as_list().ok_or(E)?;
                if fields.len() < 2 {
                    return Err(E);
                }
                let (Value::Int32(code), Value::Str(message)) = (
                    Value::decode_node(item(&mut fields, E)?)?,
                    Value::decode_node(item(&mut fields, E)?)?,
                ) else {
                    return Err(LfError::WrongType);
                };
                let mut pairs = Vec::new();
                for d in fields {
                    let mut pair = d.as_list().ok_or(E)?;
                    if pair.len() != 2 {
                        return Err(E);
                    }
                    let (Value::Str(k), Value::Str(v)) = (
                        Value::decode_node(item(&mut pair, E)?)?,
                        Value::decode_node(item(&mut pair, E)?)?,
                    ) else {
                        return Err(LfError::WrongType);
                    };
                    pairs.push((k, v));
                }
                errors.push(ErrorInfo {
                    code,
                    message,
                    debug: pairs,
                });
            }
            Outcome::Failure(errors)
        }
        _ => return Err(LfError::BadHeader),
    };
    Ok(Response { header, outcome })
}

/// A marshalled object with its message header: `( version version value )`.
pub fn decode_object(input: &[u8], limits: &Limits) -> Result<(Version, Version, Value), LfError> {
    const E: LfError = LfError::BadHeader;
    let flat = parse_flat(input, limits)?;
    let mut top = flat.root().as_list().ok_or(E)?;
    if top.len() != 3 {
        return Err(E);
    }
    Ok((
        Version::decode(item(&mut top, E)?)?,
        Version::decode(item(&mut top, E)?)?,
        Value::decode_node(item(&mut top, E)?)?,
    ))
}

/// Encodes `( version version value )`.
pub fn encode_object(protocol: Version, release: Version, value: &Value) -> Vec<u8> {
    let mut out = vec![b'('];
    write_marked(b'b', &protocol.bytes(), &mut out);
    write_marked(b'b', &release.bytes(), &mut out);
    value.encode_into(&mut out);
    out.push(b')');
    out
}
