//! Lingua Franca values: marked atoms (one marker byte, then the data) and marked lists
//! (a list whose first item is the one-byte marker atom), as the Qredo SDK's
//! `QredoWireFormat.m` reads and writes them.
//!
//! | marker | value | data |
//! |---|---|---|
//! | `I` | int32 / int64 | 4 / 8 bytes, big-endian two's complement |
//! | `T` `F` | boolean | none |
//! | `S` | string | UTF-8 |
//! | `'` | symbol | `[a-zA-Z_][a-zA-Z_0-9]*` |
//! | `Q` | QUID | 32 bytes |
//! | `b` | byte sequence | any bytes |
//! | `d` | date | year (u16 BE), month, day |
//! | `t` | time | milliseconds since midnight (u32 BE) |
//! | `D` | date-time | date, time, then `L` (local) or `U` (UTC) |
//! | `(1:[ …)` | sequence | the elements |
//! | `(1:{ …)` | set (also "optional": 0 or 1 element) | the elements, as written |
//! | `(1:C 'Name ('field value)…)` | record / union member | fields in ascending byte order of their names |
//!
//! Decoding is canonical: a record's field names must be strictly ascending (the SDK's
//! generated marshallers write them so), so `encode(decode(x)) == x` byte for byte.

use super::LfError;
use super::sexp::{Items, Limits, NodeRef, Sexp, parse_flat, write_atom, write_len};

/// A calendar date as LF carries it (not validated beyond its byte layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Date {
    /// Year.
    pub year: u16,
    /// Month (1–12 when written by the SDK).
    pub month: u8,
    /// Day of the month.
    pub day: u8,
}

/// A date and time of day, local or UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// The date.
    pub date: Date,
    /// Milliseconds since midnight.
    pub millis: u32,
    /// `U` (true) or `L` (false).
    pub utc: bool,
}

impl DateTime {
    /// The UTC date-time of `unix_ms` milliseconds since 1970-01-01T00:00:00Z (proleptic
    /// Gregorian, Howard Hinnant's `civil_from_days`); years past 65535 saturate.
    pub fn from_unix_ms(unix_ms: u64) -> Self {
        let days = (unix_ms / 86_400_000) as i64;
        let millis = (unix_ms % 86_400_000) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            date: Date {
                year: u16::try_from(year).unwrap_or(u16::MAX),
                month,
                day,
            },
            millis,
            utc: true,
        }
    }
}

/// A record (`C` list): a type or union-member name and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The constructor name (a symbol).
    pub name: String,
    /// `(name, value)` in strictly ascending byte order of the names.
    pub fields: Vec<(String, Value)>,
}

impl Record {
    /// A record with `fields`, sorted by name here (callers may list them in any order).
    pub fn new(name: &str, mut fields: Vec<(&str, Value)>) -> Self {
        fields.sort_by(|a, b| a.0.cmp(b.0));
        Self {
            name: name.to_owned(),
            fields: fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
        }
    }

    /// A record without fields (a union member such as `RendezvousAnonymous`).
    pub fn unit(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            fields: Vec::new(),
        }
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Result<&Value, LfError> {
        self.fields
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map(|i| &self.fields[i].1)
            .map_err(|_| LfError::MissingField)
    }
}

/// One Lingua Franca value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// `I` with 4 bytes.
    Int32(i32),
    /// `I` with 8 bytes.
    Int64(i64),
    /// `T` / `F`.
    Bool(bool),
    /// `S`.
    Str(String),
    /// `'`.
    Symbol(String),
    /// `Q`.
    Quid([u8; 32]),
    /// `b`.
    Bytes(Vec<u8>),
    /// `d`.
    Date(Date),
    /// `t`.
    Time(u32),
    /// `D`.
    DateTime(DateTime),
    /// `[` list.
    Seq(Vec<Self>),
    /// `{` list.
    Set(Vec<Self>),
    /// `C` list.
    Record(Record),
}

/// For every byte: [`SYMBOL_START`] if a symbol may start with it (`[a-zA-Z_]`),
/// [`SYMBOL_REST`] if it may only follow (`[0-9]`), 0 if neither. One load per byte
/// instead of four range tests: symbols are most of a request's bytes.
static SYMBOL_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' {
            SYMBOL_START
        } else if c.is_ascii_digit() {
            SYMBOL_REST
        } else {
            0
        };
        b += 1;
    }
    t
};
const SYMBOL_START: u8 = 1;
const SYMBOL_REST: u8 = 2;

/// Is `s` a valid LF symbol (`[a-zA-Z_][a-zA-Z_0-9]*`)?
pub fn is_symbol(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            SYMBOL_BYTES[usize::from(*first)] == SYMBOL_START
                && rest.iter().all(|c| SYMBOL_BYTES[usize::from(*c)] != 0)
        }
        None => false,
    }
}

/// Appends a marked atom (`marker` then `data`).
pub fn write_marked(marker: u8, data: &[u8], out: &mut Vec<u8>) {
    write_len(data.len() + 1, out);
    out.push(marker);
    out.extend_from_slice(data);
}

/// Appends `(` and the one-byte marker atom of a marked list.
pub fn write_list_start(marker: u8, out: &mut Vec<u8>) {
    out.push(b'(');
    write_atom(&[marker], out);
}

impl Value {
    /// Appends the canonical encoding.
    ///
    /// A symbol or record name that is not a valid symbol is still written as given
    /// (values built by this crate always use valid names; [`Value::decode`] refuses
    /// invalid ones).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Int32(i) => write_marked(b'I', &i.to_be_bytes(), out),
            Self::Int64(i) => write_marked(b'I', &i.to_be_bytes(), out),
            Self::Bool(true) => write_marked(b'T', &[], out),
            Self::Bool(false) => write_marked(b'F', &[], out),
            Self::Str(s) => write_marked(b'S', s.as_bytes(), out),
            Self::Symbol(s) => write_marked(b'\'', s.as_bytes(), out),
            Self::Quid(q) => write_marked(b'Q', q, out),
            Self::Bytes(b) => write_marked(b'b', b, out),
            Self::Date(d) => write_marked(b'd', &date_bytes(d), out),
            Self::Time(t) => write_marked(b't', &t.to_be_bytes(), out),
            Self::DateTime(dt) => {
                let mut data = [0u8; 9];
                data[..4].copy_from_slice(&date_bytes(&dt.date));
                data[4..8].copy_from_slice(&dt.millis.to_be_bytes());
                data[8] = if dt.utc { b'U' } else { b'L' };
                write_marked(b'D', &data, out);
            }
            Self::Seq(items) | Self::Set(items) => {
                write_list_start(
                    if matches!(self, Self::Seq(_)) {
                        b'['
                    } else {
                        b'{'
                    },
                    out,
                );
                for item in items {
                    item.encode_into(out);
                }
                out.push(b')');
            }
            Self::Record(r) => {
                write_list_start(b'C', out);
                write_marked(b'\'', r.name.as_bytes(), out);
                for (name, value) in &r.fields {
                    out.push(b'(');
                    write_marked(b'\'', name.as_bytes(), out);
                    value.encode_into(out);
                    out.push(b')');
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

    /// Reads a value from one S-expression.
    pub fn decode(sexp: &Sexp) -> Result<Self, LfError> {
        Self::decode_node(sexp.flatten().root())
    }

    /// Reads a value from one expression of a [`super::sexp::Flat`] parse.
    pub fn decode_node(node: NodeRef<'_, '_>) -> Result<Self, LfError> {
        let Some(mut items) = node.as_list() else {
            return decode_atom(node.as_atom().ok_or(LfError::BadValue)?);
        };
        let marker = items.next().ok_or(LfError::BadValue)?;
        match marker.as_atom() {
            Some(b"[") => Ok(Self::Seq(decode_all(items)?)),
            Some(b"{") => Ok(Self::Set(decode_all(items)?)),
            Some(b"C") => decode_record(items).map(Self::Record),
            _ => Err(LfError::BadValue),
        }
    }

    /// Parses and reads one value filling all of `input`.
    pub fn decode_bytes(input: &[u8], limits: &Limits) -> Result<Self, LfError> {
        Self::decode_node(parse_flat(input, limits)?.root())
    }

    /// The record, or [`LfError::WrongType`].
    pub fn as_record(&self) -> Result<&Record, LfError> {
        match self {
            Self::Record(r) => Ok(r),
            _ => Err(LfError::WrongType),
        }
    }

    /// The QUID, or [`LfError::WrongType`].
    pub fn as_quid(&self) -> Result<&[u8; 32], LfError> {
        match self {
            Self::Quid(q) => Ok(q),
            _ => Err(LfError::WrongType),
        }
    }

    /// The byte sequence, or [`LfError::WrongType`].
    pub fn as_bytes(&self) -> Result<&[u8], LfError> {
        match self {
            Self::Bytes(b) => Ok(b),
            _ => Err(LfError::WrongType),
        }
    }

    /// The int64, or [`LfError::WrongType`].
    pub fn as_i64(&self) -> Result<i64, LfError> {
        match self {
            Self::Int64(i) => Ok(*i),
            _ => Err(LfError::WrongType),
        }
    }

    /// The string, or [`LfError::WrongType`].
    pub fn as_str(&self) -> Result<&str, LfError> {
        match self {
            Self::Str(s) => Ok(s),
            _ => Err(LfError::WrongType),
        }
    }

    /// The set's elements (an LF optional is a set of 0 or 1), or
    /// [`LfError::WrongType`].
    pub fn as_set(&self) -> Result<&[Self], LfError> {
        match self {
            Self::Set(s) => Ok(s),
            _ => Err(LfError::WrongType),
        }
    }

    /// An optional (a set of at most one element) of int32: `None` for the empty set.
    pub fn as_optional_i32(&self) -> Result<Option<i32>, LfError> {
        match self.as_set()? {
            [] => Ok(None),
            [Self::Int32(i)] => Ok(Some(*i)),
            _ => Err(LfError::WrongType),
        }
    }
}

fn date_bytes(d: &Date) -> [u8; 4] {
    let y = d.year.to_be_bytes();
    [y[0], y[1], d.month, d.day]
}

/// Decodes every item (one allocation: the item count is known).
pub(super) fn decode_all(items: Items<'_, '_>) -> Result<Vec<Value>, LfError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(Value::decode_node(item)?);
    }
    Ok(out)
}

fn decode_symbol(node: NodeRef<'_, '_>) -> Result<String, LfError> {
    match Value::decode_node(node)? {
        Value::Symbol(s) => Ok(s),
        _ => Err(LfError::WrongType),
    }
}

fn decode_record(mut items: Items<'_, '_>) -> Result<Record, LfError> {
    let name = decode_symbol(items.next().ok_or(LfError::BadValue)?)?;
    let mut out: Vec<(String, Value)> = Vec::with_capacity(items.len());
    for field in items {
        let mut pair = field.as_list().ok_or(LfError::BadValue)?;
        let (2, Some(fname), Some(value)) = (pair.len(), pair.next(), pair.next()) else {
            return Err(LfError::BadValue);
        };
        let fname = decode_symbol(fname)?;
        if out
            .last()
            .is_some_and(|(prev, _)| prev.as_str() >= fname.as_str())
        {
            return Err(LfError::FieldOrder);
        }
        out.push((fname, Value::decode_node(value)?));
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
            // ASCII by construction.
            Value::Symbol(
                std::str::from_utf8(data)
                    .map_err(|_| LfError::BadValue)?
                    .to_owned(),
            )
        }
        b'Q' => {
            let mut q = [0u8; 32];
            q.copy_from_slice(fixed(32)?);
            Value::Quid(q)
        }
        b'b' => Value::Bytes(data.to_vec()),
        b'd' => Value::Date(read_date(fixed(4)?)),
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
                date: read_date(&d[..4]),
                millis: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
                utc,
            })
        }
        _ => return Err(LfError::BadValue),
    })
}

fn read_date(d: &[u8]) -> Date {
    Date {
        year: u16::from_be_bytes([d[0], d[1]]),
        month: d[2],
        day: d[3],
    }
}

#[cfg(test)]
mod tests {
    use super::super::sexp::{Limits, parse};
    use super::*;

    fn decode(b: &[u8]) -> Result<Value, LfError> {
        Value::decode(&parse(b, &Limits::default())?)
    }

    #[test]
    fn every_marked_atom_has_the_sdk_layout() {
        // Layouts from QredoWireFormat.m (QredoMarkedAtom init*With*).
        let cases: Vec<(Value, &[u8])> = vec![
            (Value::Int32(-1000), b"5:I\xff\xff\xfc\x18"),
            (Value::Int64(1), b"9:I\x00\x00\x00\x00\x00\x00\x00\x01"),
            (Value::Bool(true), b"1:T"),
            (Value::Bool(false), b"1:F"),
            (Value::Str("caf\u{e9}".into()), b"6:Scaf\xc3\xa9"),
            (Value::Symbol("hashedTag".into()), b"10:'hashedTag"),
            (
                Value::Quid([7; 32]),
                &[b"33:Q".as_slice(), &[7; 32]].concat().leak()[..],
            ),
            (Value::Bytes(vec![1, 2, 3]), b"4:b\x01\x02\x03"),
            (
                Value::Date(Date {
                    year: 1983,
                    month: 4,
                    day: 12,
                }),
                b"5:d\x07\xbf\x04\x0c",
            ),
            (Value::Time(1000), b"5:t\x00\x00\x03\xe8"),
            (
                Value::DateTime(DateTime {
                    date: Date {
                        year: 1983,
                        month: 4,
                        day: 12,
                    },
                    millis: 1000,
                    utc: true,
                }),
                b"10:D\x07\xbf\x04\x0c\x00\x00\x03\xe8U",
            ),
            (Value::Seq(vec![Value::Bool(true)]), b"(1:[1:T)"),
            (Value::Set(vec![]), b"(1:{)"),
            (
                Value::Record(Record::new(
                    "RendezvousTrusted",
                    vec![(
                        "signature",
                        Value::Record(Record::unit("RendezvousAnonymous")),
                    )],
                )),
                b"(1:C18:'RendezvousTrusted(10:'signature(1:C20:'RendezvousAnonymous)))",
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(value.encode(), bytes, "{value:?}");
            assert_eq!(decode(bytes), Ok(value));
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(decode(b"0:"), Err(LfError::BadValue));
        assert_eq!(decode(b"2:I\x00"), Err(LfError::BadValue));
        assert_eq!(decode(b"2:T\x00"), Err(LfError::BadValue));
        assert_eq!(decode(b"3:S\xff\xfe"), Err(LfError::BadValue));
        assert_eq!(decode(b"3:'1a"), Err(LfError::BadValue));
        assert_eq!(decode(b"1:'"), Err(LfError::BadValue));
        assert_eq!(decode(b"3:Qab"), Err(LfError::BadValue));
        assert_eq!(
            decode(b"10:D\x07\xbf\x04\x0c\x00\x00\x03\xe8X"),
            Err(LfError::BadValue)
        );
        assert_eq!(decode(b"1:Z"), Err(LfError::BadValue));
        assert_eq!(decode(b"()"), Err(LfError::BadValue));
        assert_eq!(decode(b"(1:x)"), Err(LfError::BadValue));
        assert_eq!(decode(b"(1:C)"), Err(LfError::BadValue));
        assert_eq!(decode(b"(1:C2:'A(2:'b))"), Err(LfError::BadValue));
        assert_eq!(
            decode(b"(1:C2:'A(2:'b1:T)(2:'a1:T))"),
            Err(LfError::FieldOrder)
        );
        assert_eq!(
            decode(b"(1:C2:'A(2:'b1:T)(2:'b1:T))"),
            Err(LfError::FieldOrder)
        );
        assert_eq!(decode(b"(1:C1:T)"), Err(LfError::WrongType));
    }

    #[test]
    fn symbol_bytes_are_exactly_the_grammar() {
        for b in 0..=255u8 {
            let start = b.is_ascii_alphabetic() || b == b'_';
            let rest = start || b.is_ascii_digit();
            assert_eq!(is_symbol(&[b]), start, "{b}");
            assert_eq!(is_symbol(&[b'a', b]), rest, "{b}");
        }
        assert!(!is_symbol(b""));
        assert!(is_symbol(b"_9aZ"));
    }

    #[test]
    fn unix_ms_to_date_time() {
        let dt = DateTime::from_unix_ms(1_700_000_000_123);
        assert_eq!(
            dt.date,
            Date {
                year: 2023,
                month: 11,
                day: 14
            }
        );
        assert_eq!(dt.millis, ((22 * 3600 + 13 * 60 + 20) * 1000) + 123);
        assert_eq!(
            DateTime::from_unix_ms(0).date,
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            DateTime::from_unix_ms(951_782_400_000).date,
            Date {
                year: 2000,
                month: 2,
                day: 29
            }
        );
    }
}
