//! `qredo_lf`: the Lingua Franca codec (`qredo::lf`) on arbitrary bytes.
//!
//! Invariants: nothing panics; the S-expression parser, the value decoder and the
//! request/response/object decoders only accept canonical bytes (whatever they accept
//! re-encodes to exactly the input); small limits are respected; every decoder answers
//! exactly as the first, tree-based one (`qredo::lf::reference`), refusals included.

use crate::qredo::lf::{
    Limits, Value, decode_object, decode_request, decode_response, encode_object, reference, sexp,
};

/// Runs one input under the default limits and under a tiny set.
pub fn run(data: &[u8]) {
    let tiny = Limits {
        max_depth: 4,
        max_atom: 16,
        max_total: 128,
        max_nodes: 12,
    };
    for limits in [Limits::default(), tiny] {
        let tree = reference::parse(data, &limits);
        assert_eq!(sexp::parse(data, &limits), tree, "parse differs");
        assert_eq!(
            Value::decode_bytes(data, &limits),
            tree.as_ref().map_err(|e| *e).and_then(reference::decode),
            "value decode differs"
        );
        assert_eq!(
            decode_request(data, &limits),
            reference::decode_request(data, &limits),
            "request decode differs"
        );
        assert_eq!(
            decode_response(data, &limits),
            reference::decode_response(data, &limits),
            "response decode differs"
        );
        assert_eq!(
            decode_object(data, &limits),
            reference::decode_object(data, &limits),
            "object decode differs"
        );
        if let Ok(s) = tree {
            assert!(data.len() <= limits.max_total);
            assert_eq!(s.encode(), data, "sexp is not canonical");
            if let Ok(v) = Value::decode(&s) {
                assert_eq!(v.encode(), data, "value is not canonical");
            }
        }
        if let Ok(req) = decode_request(data, &limits) {
            assert_eq!(req.encode(), data, "request is not canonical");
        }
        if let Ok(resp) = decode_response(data, &limits) {
            assert_eq!(resp.encode(), data, "response is not canonical");
        }
        if let Ok((p, r, v)) = decode_object(data, &limits) {
            assert_eq!(encode_object(p, r, &v), data, "object is not canonical");
        }
    }
}
