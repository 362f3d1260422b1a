//! Lingua Franca, the Qredo SDK's wire format, sans-IO: canonical S-expressions
//! ([`sexp`]), marked atoms and lists ([`value`]) and the RPC envelope ([`message`]).
//! Written from what the SDK's `QredoSExpression.m`, `QredoWireFormat.m` and
//! `QredoServiceInvoker.m` (fluidjax/qredo_ios_sdk, Apache-2.0) do; none of its code is
//! copied. Everything is bounded by [`sexp::Limits`] and never panics (fuzz target
//! `qredo_lf`). Decoding is one flat pass over the input ([`sexp::parse_flat`]) and then
//! the values, atoms borrowed until a value takes its own copy; the first, tree-based
//! decoder is kept as a test and fuzz oracle (`reference`) that it must agree with.

pub mod message;
#[cfg(any(test, fuzzing))]
pub(crate) mod reference;
pub mod sexp;
pub mod value;

pub use message::{
    ErrorInfo, Interchange, Outcome, PROTOCOL_VERSION, Request, Response, Version, decode_object,
    decode_request, decode_response, encode_object,
};
pub use sexp::{Limits, Sexp};
pub use value::{Date, DateTime, Record, Value};

/// Why bytes are not Lingua Franca (or not the expected shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LfError {
    /// The input ended inside an expression (or was empty).
    #[error("truncated expression")]
    Truncated,
    /// A byte that cannot start an expression here.
    #[error("unexpected byte")]
    UnexpectedByte,
    /// An atom length with a leading zero or more than 9 digits.
    #[error("malformed atom length")]
    BadLength,
    /// Bytes after the one expression.
    #[error("trailing bytes after the expression")]
    TrailingBytes,
    /// Nested deeper than the limit.
    #[error("nested too deeply")]
    TooDeep,
    /// An atom longer than the limit.
    #[error("atom too long")]
    AtomTooLong,
    /// The expression is longer than the limit.
    #[error("expression too large")]
    TooLarge,
    /// More atoms and lists than the limit.
    #[error("too many nodes")]
    TooManyNodes,
    /// A marked atom or list that is not well formed.
    #[error("malformed value")]
    BadValue,
    /// Record fields not in strictly ascending order (or repeated).
    #[error("record fields out of order")]
    FieldOrder,
    /// A value of another type than the one expected.
    #[error("wrong value type")]
    WrongType,
    /// A record lacks a field.
    #[error("missing field")]
    MissingField,
    /// The message, interchange or invocation header is not well formed.
    #[error("malformed message header")]
    BadHeader,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `QredoSDK/Tests/QredoSDKTests/KeychainTests.swift` `testParseKeychain` at
    /// fluidjax/qredo_ios_sdk@4f5ec5b2: 1649 bytes the SDK itself marshalled (a
    /// `Keychain` record with its header; protocol 0.2.0, release 0.1.0). Extracted
    /// verbatim from the Swift array (data, not code).
    const SDK_KEYCHAIN: &[u8] = include_bytes!("testdata/sdk_keychain.lf");

    #[test]
    fn sdk_keychain_decodes_and_reencodes_byte_for_byte() {
        let (protocol, release, value) =
            decode_object(SDK_KEYCHAIN, &Limits::default()).expect("SDK bytes decode");
        assert_eq!(
            protocol,
            Version {
                major: 0,
                minor: 2,
                patch: 0
            }
        );
        assert_eq!(
            release,
            Version {
                major: 0,
                minor: 1,
                patch: 0
            }
        );
        let keychain = value.as_record().expect("record");
        assert_eq!(keychain.name, "Keychain");
        let names: Vec<_> = keychain.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "credentialType",
                "encryptedRecoveryInfo",
                "operatorInfo",
                "vaultInfo"
            ]
        );
        let operator = keychain.field("operatorInfo").unwrap().as_record().unwrap();
        assert_eq!(
            operator.field("serviceUri").unwrap(),
            &Value::Str("tcp://alpha01.qredo.me:1883".into())
        );
        assert_eq!(
            operator.field("currentServiceAccess").unwrap(),
            &Value::Set(vec![])
        );
        assert_eq!(encode_object(protocol, release, &value), SDK_KEYCHAIN);
    }

    fn hex32(b: u8) -> Vec<u8> {
        vec![b; 32]
    }

    /// A `Rendezvous.create` request assembled by hand, atom by atom, following
    /// `QredoServiceInvoker.m invokeService:` (message header, interchange header,
    /// invocation header, the argument, three closers) and the generated marshallers
    /// of `QredoClient.m` (`RendezvousCreationInfo`, `EncryptedResponderInfo`,
    /// `RendezvousAnonymous`, `RendezvousSingleResponse`, fields alphabetical).
    pub(crate) fn sdk_create_request() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"(7:b\x00\x00\x00\x03\x00\x007:b\x00\x00\x00\x03\x00\x00");
        b.extend_from_slice(b"(1:s17:b0123456789abcdef17:bfedcba9876543210");
        b.extend_from_slice(b"11:'Rendezvous7:'create");
        b.extend_from_slice(b"(1:o14:Scom.example.a5:bs3cr");
        b.extend_from_slice(b"(1:C23:'RendezvousCreationInfo");
        b.extend_from_slice(b"(16:'durationSeconds(1:{5:I\x00\x00\x02\x58))");
        b.extend_from_slice(b"(23:'encryptedResponderInfo(1:C23:'EncryptedResponderInfo");
        b.extend_from_slice(b"(19:'authenticationCode33:b");
        b.extend_from_slice(&hex32(0xaa));
        b.extend_from_slice(b")(19:'authenticationType(1:C20:'RendezvousAnonymous))");
        b.extend_from_slice(b"(6:'value5:b\x01\x02\x03\x04)))");
        b.extend_from_slice(b"(10:'hashedTag33:Q");
        b.extend_from_slice(&hex32(0x11));
        b.extend_from_slice(b")(19:'ownershipPublicKey33:b");
        b.extend_from_slice(&hex32(0x22));
        b.extend_from_slice(b")(19:'responseCountLimit(1:C25:'RendezvousSingleResponse))");
        b.extend_from_slice(b"))))");
        b
    }

    #[test]
    fn hand_assembled_create_request_decodes_and_reencodes() {
        let bytes = sdk_create_request();
        let req = decode_request(&bytes, &Limits::default()).expect("decodes");
        assert_eq!(req.header.protocol, PROTOCOL_VERSION);
        assert_eq!(req.header.service, "Rendezvous");
        assert_eq!(req.header.operation, "create");
        assert_eq!(req.header.correlation, b"fedcba9876543210");
        assert_eq!(req.app_id, "com.example.a");
        assert_eq!(req.app_secret, b"s3cr");
        let [info] = &req.args[..] else {
            panic!("one argument")
        };
        let info = info.as_record().unwrap();
        assert_eq!(info.name, "RendezvousCreationInfo");
        assert_eq!(
            info.field("durationSeconds").unwrap().as_optional_i32(),
            Ok(Some(600))
        );
        assert_eq!(info.field("hashedTag").unwrap().as_quid(), Ok(&[0x11; 32]));
        assert_eq!(req.encode(), bytes);
    }

    #[test]
    fn responses_round_trip() {
        let header = Interchange {
            protocol: PROTOCOL_VERSION,
            release: PROTOCOL_VERSION,
            return_channel: vec![1, 2],
            correlation: vec![3; 16],
            service: "Ping".into(),
            operation: "ping".into(),
        };
        let ok = Response {
            header: header.clone(),
            outcome: Outcome::Success(vec![Value::Bool(true)]),
        };
        let bytes = ok.encode();
        assert!(
            bytes.ends_with(b"(1:r1:T)))"),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(decode_response(&bytes, &Limits::default()), Ok(ok));
        let failed = Response {
            header,
            outcome: Outcome::Failure(vec![ErrorInfo {
                code: 1001,
                message: "no".into(),
                debug: vec![("k".into(), "v".into())],
            }]),
        };
        let bytes = failed.encode();
        assert!(bytes.ends_with(b"(1:R(1:[(5:I\x00\x00\x03\xe93:Sno(2:Sk2:Sv))))))"));
        assert_eq!(decode_response(&bytes, &Limits::default()), Ok(failed));
    }
}

#[cfg(test)]
pub(crate) mod props {
    use super::*;
    use proptest::prelude::*;

    fn symbol() -> impl Strategy<Value = String> {
        "[a-zA-Z_][a-zA-Z_0-9]{0,12}"
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            any::<bool>().prop_map(Value::Bool),
            ".{0,16}".prop_map(Value::Str),
            symbol().prop_map(Value::Symbol),
            any::<[u8; 32]>().prop_map(Value::Quid),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            (any::<u16>(), any::<u8>(), any::<u8>())
                .prop_map(|(year, month, day)| Value::Date(Date { year, month, day })),
            any::<u32>().prop_map(Value::Time),
            (
                any::<u16>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                any::<bool>()
            )
                .prop_map(|(year, month, day, millis, utc)| Value::DateTime(
                    DateTime {
                        date: Date { year, month, day },
                        millis,
                        utc,
                    }
                )),
        ]
    }

    /// Any value, nested up to four levels (also used by other modules' tests).
    pub(crate) fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Seq),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
                (
                    symbol(),
                    proptest::collection::btree_map(symbol(), inner, 0..5)
                )
                    .prop_map(|(name, fields)| Value::Record(Record {
                        name,
                        fields: fields.into_iter().collect(),
                    })),
            ]
        })
    }

    /// Any request.
    fn request() -> impl Strategy<Value = Request> {
        (
            proptest::collection::vec(value(), 0..4),
            ".{0,12}",
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::collection::vec(any::<u8>(), 0..20),
            symbol(),
            symbol(),
        )
            .prop_map(
                |(args, app_id, app_secret, correlation, service, operation)| Request {
                    header: Interchange {
                        protocol: PROTOCOL_VERSION,
                        release: PROTOCOL_VERSION,
                        return_channel: vec![9; 3],
                        correlation,
                        service,
                        operation,
                    },
                    app_id,
                    app_secret,
                    args,
                },
            )
    }

    /// Any S-expression up to 8 levels deep, of small atoms that are mostly markers,
    /// symbols and marked atoms: shapes the value generators do not make (deep, narrow,
    /// misplaced markers, records with odd fields), small enough for the tiny limits.
    fn sexp_tree() -> impl Strategy<Value = Sexp> {
        let atom = proptest::sample::select(vec![
            &b""[..],
            b"[",
            b"{",
            b"C",
            b"s",
            b"o",
            b"r",
            b"R",
            b"'a",
            b"'b",
            b"Sx",
            b"b\x01",
            b"T",
            b"I\x00\x00\x00\x01",
        ])
        .prop_map(|a| Sexp::Atom(a.to_vec()));
        atom.prop_recursive(8, 48, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Sexp::List)
        })
    }

    /// A record whose fields are lists of 0 to 3 items (names, values, or neither), in
    /// any order: field counts, names and order as a record decoder must check them.
    fn record_ish() -> impl Strategy<Value = Sexp> {
        let item = prop_oneof![
            proptest::sample::select(vec!["a", "b", "c"])
                .prop_map(|n| Sexp::Atom([b"'", n.as_bytes()].concat())),
            leaf().prop_map(|v| sexp::parse(&v.encode(), &Limits::default()).expect("a leaf")),
            sexp_tree(),
        ];
        let field = proptest::collection::vec(item, 0..4).prop_map(Sexp::List);
        proptest::collection::vec(field, 0..4).prop_map(|fields| {
            let mut list = vec![Sexp::Atom(b"C".to_vec()), Sexp::Atom(b"'R".to_vec())];
            list.extend(fields);
            Sexp::List(list)
        })
    }

    /// Up to 24 tokens (parentheses and small atoms) in any order: balanced or not,
    /// narrow and deep, around every limit of the tiny set (depth 4, 12 nodes). Opening
    /// parentheses are weighted so that about one soup in 27 reaches the depth limit.
    fn token_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = proptest::sample::select(vec![
            &b"("[..],
            b"(",
            b"(",
            b"(",
            b")",
            b")",
            b"0:",
            b"1:[",
            b"1:{",
            b"1:C",
            b"2:'a",
            b"2:'b",
            b"2:Sx",
            b"1:T",
        ]);
        proptest::collection::vec(token, 0..24).prop_map(|t| t.concat())
    }

    /// The encoding of a value, a request, a success or failure response, an object or
    /// an S-expression, then up to four single-byte edits (replace, insert, delete), the inserted bytes
    /// mostly the syntax's own: inputs that get deep into the decoders before they fail.
    fn near_valid() -> impl Strategy<Value = Vec<u8>> {
        let base = prop_oneof![
            value().prop_map(|v| v.encode()),
            request().prop_map(|r| r.encode()),
            (request(), proptest::collection::vec(value(), 0..3)).prop_map(|(r, values)| {
                Response {
                    header: r.header,
                    outcome: Outcome::Success(values),
                }
                .encode()
            }),
            (request(), any::<i32>(), ".{0,8}", ".{0,4}").prop_map(|(r, code, m, k)| {
                Response {
                    header: r.header,
                    outcome: Outcome::Failure(vec![ErrorInfo {
                        code,
                        message: m,
                        debug: vec![(k.clone(), k)],
                    }]),
                }
                .encode()
            }),
            value().prop_map(|v| encode_object(PROTOCOL_VERSION, PROTOCOL_VERSION, &v)),
            sexp_tree().prop_map(|t| t.encode()),
            record_ish().prop_map(|t| t.encode()),
        ];
        let byte = prop_oneof![
            proptest::sample::select(b"()0123456789:'SCbIQ[{sor".to_vec()),
            any::<u8>(),
        ];
        let edits =
            proptest::collection::vec((any::<proptest::sample::Index>(), byte, 0u8..3), 0..4);
        (base, edits).prop_map(|(mut bytes, edits)| {
            for (at, b, kind) in edits {
                if bytes.is_empty() {
                    bytes.push(b);
                    continue;
                }
                let at = at.index(bytes.len());
                match kind {
                    0 => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            bytes
        })
    }

    /// Every decoder gives exactly what the reference decoder gives on `bytes`, value or
    /// refusal, under the default limits and under tiny ones.
    pub(crate) fn agree_with_reference(bytes: &[u8]) -> Result<(), TestCaseError> {
        let tiny = Limits {
            max_depth: 4,
            max_atom: 16,
            max_total: 128,
            max_nodes: 12,
        };
        for limits in [Limits::default(), tiny] {
            let tree = reference::parse(bytes, &limits);
            prop_assert_eq!(&sexp::parse(bytes, &limits), &tree);
            let value = tree.as_ref().map_err(|e| *e).and_then(reference::decode);
            prop_assert_eq!(Value::decode_bytes(bytes, &limits), value.clone());
            if let Ok(tree) = &tree {
                prop_assert_eq!(Value::decode(tree), value);
            }
            prop_assert_eq!(
                decode_request(bytes, &limits),
                reference::decode_request(bytes, &limits)
            );
            prop_assert_eq!(
                decode_response(bytes, &limits),
                reference::decode_response(bytes, &limits)
            );
            prop_assert_eq!(
                decode_object(bytes, &limits),
                reference::decode_object(bytes, &limits)
            );
        }
        Ok(())
    }

    proptest! {
        /// The flat decoders agree with the reference on near-valid inputs.
        #[test]
        fn near_valid_inputs_agree_with_the_reference(bytes in near_valid()) {
            agree_with_reference(&bytes)?;
        }

        /// ... on record-shaped lists ...
        #[test]
        fn record_shapes_agree_with_the_reference(record in record_ish()) {
            agree_with_reference(&record.encode())?;
        }

        /// ... on token soups ...
        #[test]
        fn token_soups_agree_with_the_reference(bytes in token_soup()) {
            agree_with_reference(&bytes)?;
        }

        /// ... and on arbitrary bytes.
        #[test]
        fn arbitrary_bytes_agree_with_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            agree_with_reference(&bytes)?;
        }

        /// Every value survives encode → decode, and its bytes survive decode → encode.
        #[test]
        fn values_round_trip(v in value()) {
            let bytes = v.encode();
            let sexp = sexp::parse(&bytes, &Limits::default()).expect("own encoding parses");
            prop_assert_eq!(sexp.encode(), bytes.clone());
            let back = Value::decode(&sexp).expect("own encoding decodes");
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back, v);
        }

        /// Whole requests survive encode → decode.
        #[test]
        fn requests_round_trip(req in request()) {
            let bytes = req.encode();
            prop_assert_eq!(decode_request(&bytes, &Limits::default()).expect("decodes"), req);
        }

        /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to
        /// exactly the input.
        #[test]
        fn arbitrary_bytes_are_canonical_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(s) = sexp::parse(&bytes, &Limits::default()) {
                prop_assert_eq!(s.encode(), bytes.clone());
                if let Ok(v) = Value::decode(&s) {
                    prop_assert_eq!(v.encode(), bytes);
                }
            }
        }
    }
}
