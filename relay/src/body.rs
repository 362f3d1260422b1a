//! The small HTTP primitives every HTTP family shares: one body reader (a limit and a
//! deadline, with a typed error each family maps to its own exact reply) and one JSON
//! reply.
//!
//! I/O contract: [`read_body`] awaits the request body (no other I/O); [`json_reply`]
//! is pure.

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use std::time::Duration;

/// Why a request body could not be read. Each family answers each case in its own
/// wire shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body announced or sent more than the limit.
    #[error("request body too large")]
    TooLarge,
    /// The whole body did not arrive before the deadline.
    #[error("request body not received in time")]
    Timeout,
    /// The body's framing broke (a bad chunk, a connection error).
    #[error("malformed request body")]
    Malformed,
}

/// Reads a body of at most `limit` bytes within `deadline`. A body whose announced
/// length already exceeds `limit` is refused without reading it.
pub async fn read_body<B>(body: B, limit: usize, deadline: Duration) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Malformed),
    }
}

/// A `status` response with `body` and `Content-Type: application/json`, and no other
/// header.
pub fn json_reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;
    type FrameStream = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
    >;

    fn stream(frames: Frames) -> FrameStream {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn reads_a_body_up_to_the_limit() {
        let got = read_body(
            Full::new(Bytes::from_static(b"12345")),
            5,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(&got[..], b"12345");
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_too_large() {
        let err = read_body(
            Full::new(Bytes::from_static(b"123456")),
            5,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err, BodyError::TooLarge);
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_too_large() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"123"))),
            Ok(Frame::data(Bytes::from_static(b"456"))),
        ];
        let err = read_body(stream(frames), 5, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, BodyError::TooLarge);
    }

    #[tokio::test]
    async fn a_broken_body_is_malformed() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"12"))),
            Err(std::io::Error::other("bad chunk")),
        ];
        let err = read_body(stream(frames), 5, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, BodyError::Malformed);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let pending = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::io::Error>,
        >());
        let err = read_body(pending, 5, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err, BodyError::Timeout);
    }

    #[tokio::test]
    async fn json_reply_sets_status_type_and_body() {
        let resp = json_reply(StatusCode::CREATED, r#"{"ok":true}"#);
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers().len(), 1);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"ok":true}"#);
    }
}
