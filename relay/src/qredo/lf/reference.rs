//! The codec's first decoder, kept as a test oracle: a recursive-descent parser into an
//! owned [`Sexp`] tree, then values read from the tree by slice patterns. The decoders
//! in use (one flat pass, atoms borrowing the input) must agree with it on every input,
//! refusals included (`props::*_agree_with_the_reference`).

use super::LfError;
use super::message::{ErrorInfo, Interchange, Outcome, Partial, Request, Response, Version};
use super::sexp::{Limits, Sexp};
use super::value::{Date, DateTime, Record, Value, is_symbol};

pub(crate) fn parse(input: &[u8], limits: &Limits) -> Result<Sexp, LfError> {
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

pub(crate) fn decode(sexp: &Sexp) -> Result<Value, LfError> {
    match sexp {
        Sexp::Atom(a) => decode_atom(a),
        Sexp::List(items) => {
            let (marker, rest) = items.split_first().ok_or(LfError::BadValue)?;
            match marker.as_atom() {
                Some(b"[") => Ok(Value::Seq(decode_all(rest)?)),
                Some(b"{") => Ok(Value::Set(decode_all(rest)?)),
                Some(b"C") => decode_record(rest).map(Value::Record),
                _ => Err(LfError::BadValue),
            }
        }
    }
}

fn decode_all(items: &[Sexp]) -> Result<Vec<Value>, LfError> {
    items.iter().map(decode).collect()
}

fn decode_symbol(sexp: &Sexp) -> Result<String, LfError> {
    match decode(sexp)? {
        Value::Symbol(s) => Ok(s),
        _ => Err(LfError::WrongType),
    }
}

fn decode_record(items: &[Sexp]) -> Result<Record, LfError> {
    let (name, fields) = items.split_first().ok_or(LfError::BadValue)?;
    let name = decode_symbol(name)?;
    let mut out: Vec<(String, Value)> = Vec::with_capacity(fields.len());
    for field in fields {
        let [fname, value] = field.as_list().ok_or(LfError::BadValue)? else {
            return Err(LfError::BadValue);
        };
        let fname = decode_symbol(fname)?;
        if out
            .last()
            .is_some_and(|(prev, _)| prev.as_str() >= fname.as_str())
        {
            return Err(LfError::FieldOrder);
        }
        out.push((fname, decode(value)?));
    }
    Ok(Record { name, fields: out })
}

fn decode_atom(atom: &[u8]) -> Result<Value, LfError> {
    let (&marker, data) = atom.split_first().ok_or(LfError::BadValue)?;
    let fixed = |n: usize| {
        if data.len() == n {
            Ok(data)
        } else {
            Err(LfError::BadValue)
        }
    };
    let date = |d: &[u8]| Date {
        year: u16::from_be_bytes([d[0], d[1]]),
        month: d[2],
        day: d[3],
    };
    Ok(match marker {
        b'I' => match data.len() {
            4 => Value::Int32(i32::from_be_bytes([data[0], data[1], data[2], data[3]])),
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                Value::Int64(i64::from_be_bytes(b))
            }
            _ => return Err(LfError::BadValue),
        },
        b'T' => {
            fixed(0)?;
            Value::Bool(true)
        }
        b'F' => {
            fixed(0)?;
            Value::Bool(false)
        }
        b'S' => Value::Str(
            std::str::from_utf8(data)
                .map_err(|_| LfError::BadValue)?
                .to_owned(),
        ),
        b'\'' => {
            if !is_symbol(data) {
                return Err(LfError::BadValue);
            }
            Value::Symbol(String::from_utf8_lossy(data).into_owned())
        }
        b'Q' => {
            let mut q = [0u8; 32];
            q.copy_from_slice(fixed(32)?);
            Value::Quid(q)
        }
        b'b' => Value::Bytes(data.to_vec()),
        b'd' => Value::Date(date(fixed(4)?)),
        b't' => {
            let d = fixed(4)?;
            Value::Time(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        }
        b'D' => {
            let d = fixed(9)?;
            let utc = match d[8] {
                b'U' => true,
                b'L' => false,
                _ => return Err(LfError::BadValue),
            };
            Value::DateTime(DateTime {
                date: date(&d[..4]),
                millis: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
                utc,
            })
        }
        _ => return Err(LfError::BadValue),
    })
}

fn version(sexp: &Sexp) -> Result<Version, LfError> {
    match sexp.as_atom() {
        Some([b'b', a0, a1, b0, b1, c0, c1]) => Ok(Version {
            major: u16::from_be_bytes([*a0, *a1]),
            minor: u16::from_be_bytes([*b0, *b1]),
            patch: u16::from_be_bytes([*c0, *c1]),
        }),
        _ => Err(LfError::BadHeader),
    }
}

fn marked_list(sexp: &Sexp, marker: u8) -> Result<&[Sexp], LfError> {
    let items = sexp.as_list().ok_or(LfError::BadHeader)?;
    match items.split_first() {
        Some((m, rest)) if m.as_atom() == Some(&[marker][..]) => Ok(rest),
        _ => Err(LfError::BadHeader),
    }
}

fn symbol(sexp: &Sexp) -> Result<String, LfError> {
    match decode(sexp) {
        Ok(Value::Symbol(s)) => Ok(s),
        _ => Err(LfError::BadHeader),
    }
}

fn bytes(sexp: &Sexp) -> Result<Vec<u8>, LfError> {
    match sexp.as_atom() {
        Some([b'b', rest @ ..]) => Ok(rest.to_vec()),
        _ => Err(LfError::BadHeader),
    }
}

fn read_interchange(top: &Sexp) -> Result<(Interchange, &[Sexp]), LfError> {
    let [protocol, release, inter] = top.as_list().ok_or(LfError::BadHeader)? else {
        return Err(LfError::BadHeader);
    };
    let protocol = version(protocol)?;
    let release = version(release)?;
    let items = marked_list(inter, b's')?;
    let [rc, corr, service, op, rest @ ..] = items else {
        return Err(LfError::BadHeader);
    };
    Ok((
        Interchange {
            protocol,
            release,
            return_channel: bytes(rc)?,
            correlation: bytes(corr)?,
            service: symbol(service)?,
            operation: symbol(op)?,
        },
        rest,
    ))
}

pub(crate) fn decode_request(input: &[u8], limits: &Limits) -> Result<Request, (LfError, Partial)> {
    let top = parse(input, limits).map_err(|e| (e, Partial::default()))?;
    let (header, rest) = read_interchange(&top).map_err(|e| (e, Partial::default()))?;
    let fail = |e: LfError, header: &Interchange| {
        (
            e,
            Partial {
                header: Some(header.clone()),
            },
        )
    };
    let [invocation] = rest else {
        return Err(fail(LfError::BadHeader, &header));
    };
    let items = marked_list(invocation, b'o').map_err(|e| fail(e, &header))?;
    let [app_id, app_secret, args @ ..] = items else {
        return Err(fail(LfError::BadHeader, &header));
    };
    let Ok(Value::Str(app_id)) = decode(app_id) else {
        return Err(fail(LfError::BadHeader, &header));
    };
    let app_secret = bytes(app_secret).map_err(|e| fail(e, &header))?;
    let args = args
        .iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e, &header))?;
    Ok(Request {
        header,
        app_id,
        app_secret,
        args,
    })
}

pub(crate) fn decode_response(input: &[u8], limits: &Limits) -> Result<Response, LfError> {
    let top = parse(input, limits)?;
    let (header, rest) = read_interchange(&top)?;
    let [result] = rest else {
        return Err(LfError::BadHeader);
    };
    let items = result.as_list().ok_or(LfError::BadHeader)?;
    let (status, rest) = items.split_first().ok_or(LfError::BadHeader)?;
    let outcome = match status.as_atom() {
        Some(b"r") => Outcome::Success(rest.iter().map(decode).collect::<Result<_, _>>()?),
        Some(b"R") => {
            let [seq] = rest else {
                return Err(LfError::BadHeader);
            };
            let mut errors = Vec::new();
            for item in marked_list(seq, b'[')? {
                let fields = item.as_list().ok_or(LfError::BadValue)?;
                let [code, message, debug @ ..] = fields else {
                    return Err(LfError::BadValue);
                };
                let (Value::Int32(code), Value::Str(message)) = (decode(code)?, decode(message)?)
                else {
                    return Err(LfError::WrongType);
                };
                let mut pairs = Vec::new();
                for d in debug {
                    let [k, v] = d.as_list().ok_or(LfError::BadValue)? else {
                        return Err(LfError::BadValue);
                    };
                    let (Value::Str(k), Value::Str(v)) = (decode(k)?, decode(v)?) else {
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

pub(crate) fn decode_object(
    input: &[u8],
    limits: &Limits,
) -> Result<(Version, Version, Value), LfError> {
    let top = parse(input, limits)?;
    let [protocol, release, value] = top.as_list().ok_or(LfError::BadHeader)? else {
        return Err(LfError::BadHeader);
    };
    Ok((version(protocol)?, version(release)?, decode(value)?))
}
