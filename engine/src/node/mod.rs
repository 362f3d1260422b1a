//! node-rendezvous (generation B, the CONNECT protocol): parsers and exact frames.
//!
//! Everything here is pure and bounded: inputs come from a parsed head (at most 16 KiB),
//! nothing allocates more than a copy of its input, and nothing panics on any input.
//! The routing decisions that use these pieces are in [`router`]; the TOTP check is in
//! [`crate::totp`].
//!
//! Wire formats (`../shared/reference/protocols.md` §1.3-§1.5):
//! - hidden server: `CONNECT uuid:<UUID>?response=<TOTP> HTTP/1.1`, answered exactly
//!   `HTTP/1.1 200\r\n\r\n` or an error frame [`error_frame`];
//! - mobile client: any request whose `Authorization` (Basic or Digest) names the id, or
//!   a WebSocket upgrade with `?rendezvous=<UUID>`; its head is rebuilt by
//!   [`rebuild_head`] and written to the hidden server.

pub mod router;

pub use router::{CompatRouter, CompatRouterConfig, HTTP_SERVICE_PATHS, HTTP_SERVICE_PREFIXES};

use crate::head::{Method, RequestHead};
use base64::Engine as _;

/// Diagnostic of the 403 for a CONNECT target whose scheme is not `uuid:`.
pub const DIAG_WRONG_SCHEME: &str = "invalid protocol, should be uuid:";
/// Diagnostic of the 407 for a CONNECT without `?response=`.
pub const DIAG_MISSING_RESPONSE: &str = "missing response parameter";
/// Diagnostic of the 409 for bytes sent before the 200.
pub const DIAG_EARLY_DATA: &str = "wait for response to CONNECT before sending data";
/// Diagnostic of the 401 for a token that does not verify (or an id without a record).
pub const DIAG_INVALID_REQUEST: &str = "invalid request";
/// Diagnostic of the permanent 400 for an unusable `Authorization` header.
pub const DIAG_BAD_AUTHORIZATION: &str = "invalid Authorization header";
/// Diagnostic of the 404 when no hidden server is parked under the id.
pub const DIAG_NOT_REGISTERED: &str = "UUID not registered";
/// The Digest `opaque`: lower-case hex MD5 of `rendezvous`, as upstream sends it.
pub const DIGEST_OPAQUE: &str = "a4f316df3e6c55a20ca82389083849ea";

/// A node-rendezvous error frame: `HTTP/1.1 <code>\r\n\r\n` and the JSON body, with no
/// reason phrase, no headers and no Content-Length (the body ends at the close).
pub fn error_frame(code: u16, permanent: bool, diagnostic: &str) -> Vec<u8> {
    // A JSON string of a &str cannot fail to serialise.
    let diag = serde_json::to_string(diagnostic).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "HTTP/1.1 {code}\r\n\r\n{{\"error\":{{\"permanent\":{permanent},\"diagnostic\":{diag}}}}}"
    )
    .into_bytes()
}

/// The 404 a mobile client gets when no hidden server is parked under its id.
pub fn not_registered_frame() -> Vec<u8> {
    error_frame(404, false, DIAG_NOT_REGISTERED)
}

/// The permanent 400 for an `Authorization` header that names no id.
pub fn bad_authorization_frame() -> Vec<u8> {
    error_frame(400, true, DIAG_BAD_AUTHORIZATION)
}

/// The 401 Digest challenge for a mobile request without `Authorization`.
///
/// Upstream (a Node `http.Server`) sends `www-authenticate: Digest realm="rendezvous",
/// qop="auth, auth-int", nonce="<md5 hex>", opaque="<md5('rendezvous') hex>"` with an
/// empty body. tryst sends that header verbatim (lower-case name, as Node does), plus
/// `Content-Length: 0` and `Connection: close` because it closes after every refusal;
/// curl and browsers then retry with Digest credentials on a new connection.
/// `nonce_hex` is any per-response value (upstream: md5 of the time in ms).
pub fn digest_challenge(nonce_hex: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Digest realm=\"rendezvous\", qop=\"auth, auth-int\", nonce=\"{nonce_hex}\", opaque=\"{DIGEST_OPAQUE}\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A node-rendezvous CONNECT target, split as Node's `url.parse` splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeConnect<'a> {
    /// The "host": what follows `uuid:` up to `/`, `?` or `#` (not yet checked to be a
    /// UUID; Node lower-cases it, [`crate::target::RendezvousId::parse`] ignores case).
    pub host: &'a str,
    /// The first `response` query parameter, if present and non-empty (upstream treats
    /// an empty one as missing). Not percent-decoded: a token is digits.
    pub response: Option<&'a str>,
}

/// Why a node-rendezvous CONNECT target was refused before any check of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeConnectError {
    /// The scheme is not `uuid:` (any case, as `url.parse` lower-cases it): 403.
    #[error("{DIAG_WRONG_SCHEME}")]
    WrongScheme,
}

/// Parses a CONNECT target of the form `uuid:<ID>?response=<TOKEN>`.
pub fn parse_node_connect(target: &str) -> Result<NodeConnect<'_>, NodeConnectError> {
    let (scheme, rest) = target
        .split_once(':')
        .ok_or(NodeConnectError::WrongScheme)?;
    if !scheme.eq_ignore_ascii_case("uuid") {
        return Err(NodeConnectError::WrongScheme);
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest.get(..host_end).unwrap_or_default();
    let response = query_param(rest, "response").filter(|v| !v.is_empty());
    Ok(NodeConnect { host, response })
}

/// True when a CONNECT target belongs to node-rendezvous rather than the native protocol
/// on a plain listener: scheme `uuid:` in any case and a query string.
pub fn looks_like_node_connect(target: &str) -> bool {
    target
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("uuid:"))
        && target.contains('?')
}

/// The value of the first query parameter `name` of a request target (`path?query#frag`),
/// without percent-decoding. A parameter without `=` has the empty value.
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The path of a request target: everything before `?` or `#`.
pub fn target_path(target: &str) -> &str {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    target.get(..end).unwrap_or_default()
}

/// Why an `Authorization` header names no id (answered with the permanent 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizationError {
    /// A scheme other than Basic or Digest.
    #[error("unsupported Authorization scheme")]
    UnsupportedScheme,
    /// Basic credentials that are not base64, not UTF-8, or have an empty user.
    #[error("malformed Basic credentials")]
    BadBasic,
    /// Digest parameters without a `username`, or not parseable.
    #[error("malformed Digest credentials")]
    BadDigest,
}

/// The user name an `Authorization` header carries, as upstream's `getuuid` reads it:
/// `Basic <base64>` → the text before the first `:` (the whole text without one), which
/// must be non-empty; `Digest ...` → the `username` parameter, quoted or not. Scheme
/// names are case-insensitive. The password and the Digest response are never checked.
pub fn authorization_username(value: &[u8]) -> Result<String, AuthorizationError> {
    let text = std::str::from_utf8(value).map_err(|_| AuthorizationError::UnsupportedScheme)?;
    let text = text.trim();
    let (scheme, params) = text.split_once([' ', '\t']).unwrap_or((text, ""));
    let params = params.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        basic_username(params)
    } else if scheme.eq_ignore_ascii_case("digest") {
        digest_username(params)
    } else {
        Err(AuthorizationError::UnsupportedScheme)
    }
}

fn basic_username(b64: &str) -> Result<String, AuthorizationError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = engine
        .decode(b64)
        .map_err(|_| AuthorizationError::BadBasic)?;
    let text = String::from_utf8(bytes).map_err(|_| AuthorizationError::BadBasic)?;
    let user = text.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return Err(AuthorizationError::BadBasic);
    }
    Ok(user.to_owned())
}

/// Walks `key=value` pairs separated by commas; values may be quoted (with `\` escapes)
/// or bare (upstream rewrites bare values into quoted ones before parsing).
fn digest_username(params: &str) -> Result<String, AuthorizationError> {
    let b = params.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && !matches!(b[i], b'=' | b',' | b' ' | b'\t') {
            i += 1;
        }
        let key = params.get(key_start..i).unwrap_or_default();
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            if key.is_empty() && i >= b.len() {
                break;
            }
            return Err(AuthorizationError::BadDigest);
        }
        i += 1; // '='
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(AuthorizationError::BadDigest),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        if let Some(&c) = b.get(i + 1) {
                            v.push(c);
                        }
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).map_err(|_| AuthorizationError::BadDigest)?
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            params.get(start..i).unwrap_or_default().trim().to_owned()
        };
        if key.eq_ignore_ascii_case("username") {
            return Ok(value);
        }
    }
    Err(AuthorizationError::BadDigest)
}

/// True when the request asks for a protocol upgrade (WebSocket): a non-empty `Upgrade`
/// header, as Node's `upgrade` event sees it.
pub fn is_upgrade(head: &RequestHead) -> bool {
    head.header("upgrade")
        .is_some_and(|v| !v.iter().all(u8::is_ascii_whitespace))
}

/// The method token as sent.
pub fn method_name(method: &Method) -> &str {
    match method {
        Method::Connect => "CONNECT",
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Patch => "PATCH",
        Method::Other(token) => token,
    }
}

/// The request head upstream writes to the hidden server at pairing:
/// `<METHOD> <target> HTTP/1.<minor>\r\n`, each header as `name: value\r\n` with the name
/// lower-cased and every `authorization` header dropped, then `\r\n`.
///
/// Differences from upstream, which rebuilds from Node's `req.headers` object: headers
/// are written one per received field in their order (Node joins most repeated fields
/// with `, ` and keeps only the first of a few, such as `host`), and the target is
/// written as received (Node re-serialises it with `url.parse(..).href`, which only
/// differs for unusual spellings).
pub fn rebuild_head(head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.head_len);
    out.extend_from_slice(method_name(&head.method).as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(format!(" HTTP/1.{}\r\n", head.minor_version).as_bytes());
    for h in &head.headers {
        if h.name.eq_ignore_ascii_case("authorization") {
            continue;
        }
        out.extend_from_slice(h.name.to_ascii_lowercase().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{HeadLimits, HeadStatus, parse_head};
    use md5::{Digest, Md5};

    fn head(text: &str) -> RequestHead {
        match parse_head(text.as_bytes(), &HeadLimits::default()) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("test head did not parse: {other:?}"),
        }
    }

    #[test]
    fn error_frames_are_exact() {
        assert_eq!(
            error_frame(403, false, DIAG_WRONG_SCHEME),
            b"HTTP/1.1 403\r\n\r\n{\"error\":{\"permanent\":false,\"diagnostic\":\"invalid protocol, should be uuid:\"}}"
        );
        assert_eq!(
            not_registered_frame(),
            b"HTTP/1.1 404\r\n\r\n{\"error\":{\"permanent\":false,\"diagnostic\":\"UUID not registered\"}}"
        );
        assert_eq!(
            bad_authorization_frame(),
            b"HTTP/1.1 400\r\n\r\n{\"error\":{\"permanent\":true,\"diagnostic\":\"invalid Authorization header\"}}"
        );
        assert_eq!(
            error_frame(401, false, "a \"quoted\" one"),
            b"HTTP/1.1 401\r\n\r\n{\"error\":{\"permanent\":false,\"diagnostic\":\"a \\\"quoted\\\" one\"}}"
        );
    }

    #[test]
    fn digest_challenge_is_exact_and_opaque_is_md5_of_rendezvous() {
        let opaque = hex::encode(Md5::digest(b"rendezvous"));
        assert_eq!(opaque, DIGEST_OPAQUE);
        let got = digest_challenge("00112233445566778899aabbccddeeff");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Digest realm=\"rendezvous\", qop=\"auth, auth-int\", nonce=\"00112233445566778899aabbccddeeff\", opaque=\"a4f316df3e6c55a20ca82389083849ea\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn node_connect_targets() {
        let id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        let t = format!("uuid:{id}?response=123456");
        assert_eq!(
            parse_node_connect(&t),
            Ok(NodeConnect {
                host: id,
                response: Some("123456")
            })
        );
        let t = format!("UUID:{}?x=1&response=98765432#frag", id.to_uppercase());
        let p = parse_node_connect(&t).unwrap();
        assert_eq!(p.response, Some("98765432"));
        assert_eq!(p.host, id.to_uppercase());
        for missing in [
            format!("uuid:{id}?"),
            format!("uuid:{id}?response="),
            format!("uuid:{id}?responses=1"),
            format!("uuid:{id}#response=1"),
            format!("uuid:{id}"),
        ] {
            assert_eq!(
                parse_node_connect(&missing).unwrap().response,
                None,
                "{missing}"
            );
        }
        for wrong in [
            "example.com:443",
            "http://x/",
            "",
            "uuid",
            "tag:x?response=1",
        ] {
            assert_eq!(
                parse_node_connect(wrong),
                Err(NodeConnectError::WrongScheme),
                "{wrong}"
            );
        }
        assert!(looks_like_node_connect(&format!("uuid:{id}?response=1")));
        assert!(looks_like_node_connect("UuId:x?"));
        assert!(!looks_like_node_connect(&format!("uuid:{id}")));
        assert!(!looks_like_node_connect("host:443?x"));
        assert!(!looks_like_node_connect("uui"));
        assert!(!looks_like_node_connect("\u{e9}\u{e9}\u{e9}?"));
    }

    #[test]
    fn query_params_and_paths() {
        assert_eq!(
            query_param("/ws?rendezvous=abc&x", "rendezvous"),
            Some("abc")
        );
        assert_eq!(query_param("/ws?x&rendezvous=", "rendezvous"), Some(""));
        assert_eq!(query_param("/ws?x", "x"), Some(""));
        assert_eq!(query_param("/ws", "x"), None);
        assert_eq!(query_param("/ws?a=1#rendezvous=2", "rendezvous"), None);
        assert_eq!(target_path("/metrics?x=1"), "/metrics");
        assert_eq!(target_path("/a#b"), "/a");
        assert_eq!(target_path(""), "");
    }

    #[test]
    fn basic_usernames() {
        use base64::engine::general_purpose::STANDARD;
        let enc = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        assert_eq!(
            authorization_username(enc(&format!("{id}:x")).as_bytes()),
            Ok(id.to_owned())
        );
        assert_eq!(
            authorization_username(enc("user:pa:ss").as_bytes()),
            Ok("user".into())
        );
        assert_eq!(
            authorization_username(enc("nocolon").as_bytes()),
            Ok("nocolon".into())
        );
        // Unpadded base64 and a lower-case scheme are tolerated.
        let unpadded = format!("basic {}", STANDARD.encode("ab:c").trim_end_matches('='));
        assert_eq!(authorization_username(unpadded.as_bytes()), Ok("ab".into()));
        for bad in [enc(":x"), enc(""), "Basic !!!".into(), "Basic".into()] {
            assert_eq!(
                authorization_username(bad.as_bytes()),
                Err(AuthorizationError::BadBasic),
                "{bad}"
            );
        }
        let non_utf8 = format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':']));
        assert_eq!(
            authorization_username(non_utf8.as_bytes()),
            Err(AuthorizationError::BadBasic)
        );
    }

    #[test]
    fn digest_usernames() {
        let id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        let curl = format!(
            "Digest username=\"{id}\", realm=\"rendezvous\", nonce=\"abc\", uri=\"/x\", cnonce=\"Y2M=\", nc=00000001, qop=auth, response=\"0123\", opaque=\"{DIGEST_OPAQUE}\""
        );
        assert_eq!(authorization_username(curl.as_bytes()), Ok(id.to_owned()));
        let later = format!("Digest realm=\"r\", username=\"{id}\"");
        assert_eq!(authorization_username(later.as_bytes()), Ok(id.to_owned()));
        let bare = format!("digest realm=r,username={id} ,nonce=n");
        assert_eq!(authorization_username(bare.as_bytes()), Ok(id.to_owned()));
        assert_eq!(
            authorization_username(br#"Digest realm="a\"b", username="x\\y""#),
            Ok("x\\y".into())
        );
        assert_eq!(
            authorization_username(br#"Digest username="""#),
            Ok(String::new())
        );
        for bad in [
            &b"Digest realm=\"r\""[..],
            b"Digest",
            b"Digest username",
            b"Digest username=\"unterminated",
            b"Digest garbage here",
        ] {
            assert_eq!(
                authorization_username(bad),
                Err(AuthorizationError::BadDigest),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn other_schemes_are_unsupported() {
        for bad in [
            &b"Bearer abc"[..],
            b"",
            b"Tryst ts=1",
            b"\xff\xfe",
            b"Basicx abc",
        ] {
            assert_eq!(
                authorization_username(bad),
                Err(AuthorizationError::UnsupportedScheme),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rebuilt_head_lower_cases_names_and_drops_authorization() {
        let h = head(
            "POST /api/x?rendezvous=1 HTTP/1.1\r\nHost: relay:7400\r\nAuthorization: Basic eDp5\r\nX-Custom:  v a l \r\nAUTHORIZATION: Digest username=\"a\"\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8(rebuild_head(&h)).unwrap(),
            "POST /api/x?rendezvous=1 HTTP/1.1\r\nhost: relay:7400\r\nx-custom: v a l\r\ncontent-length: 2\r\n\r\n"
        );
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(rebuild_head(&h), b"GET / HTTP/1.0\r\n\r\n");
        let h = head("PROPFIND /dav HTTP/1.1\r\n\r\n");
        assert_eq!(rebuild_head(&h), b"PROPFIND /dav HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade(&head(
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )));
        assert!(!is_upgrade(&head("GET /ws HTTP/1.1\r\nUpgrade: \r\n\r\n")));
        assert!(!is_upgrade(&head("GET /ws HTTP/1.1\r\n\r\n")));
    }
}
