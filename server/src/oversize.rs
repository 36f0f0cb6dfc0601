//! Oversized messages are RESOURCE_EXHAUSTED, as gRPC specifies, with a message
//! that names the limit and the setting that raises it. tonic reports them as
//! OUT_OF_RANGE; a unary request fails before any handler runs, so its status is
//! rewritten in the response headers here, and a streamed message that is too
//! large surfaces in the handler, which calls [`oversize_status`].

use http::HeaderMap;
use tonic::{Code, Status};

/// The words tonic's codec uses for a message over the size limit.
const TONIC_TOO_LARGE: &str = "message length too large";

/// RESOURCE_EXHAUSTED for tonic's "message too large" OUT_OF_RANGE, any other
/// status unchanged.
pub fn oversize_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains(TONIC_TOO_LARGE) {
        let detail = status
            .message()
            .split_once(": ")
            .map_or(status.message(), |(_, rest)| rest);
        Status::resource_exhausted(format!(
            "message too large ({detail}); send smaller batches or raise the server's \
             --max-message-mib / OCTET_MAX_MESSAGE_MIB"
        ))
    } else {
        status
    }
}

/// Rewrites a trailers-only error response's headers when they carry tonic's
/// oversize status.
pub fn rewrite_headers(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::OutOfRange {
        return;
    }
    let mapped = oversize_status(status);
    if mapped.code() == Code::ResourceExhausted {
        headers.remove("grpc-status");
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        if let Err(e) = mapped.add_header(headers) {
            tracing::warn!("cannot rewrite an oversize status: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_oversize_becomes_resource_exhausted() {
        let s = Status::out_of_range(
            "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes",
        );
        let mut headers = HeaderMap::new();
        s.add_header(&mut headers).expect("test value");
        rewrite_headers(&mut headers);
        let got = Status::from_header_map(&headers).expect("test value");
        assert_eq!(got.code(), Code::ResourceExhausted);
        assert!(
            got.message().contains("70000000 bytes"),
            "{}",
            got.message()
        );
        assert!(got.message().contains("--max-message-mib"));
    }

    #[test]
    fn other_statuses_are_left_alone() {
        for s in [
            Status::out_of_range("offset: past the end"),
            Status::invalid_argument("vector: wrong dimension"),
        ] {
            let mut headers = HeaderMap::new();
            s.add_header(&mut headers).expect("test value");
            rewrite_headers(&mut headers);
            let got = Status::from_header_map(&headers).expect("test value");
            assert_eq!(got.code(), s.code());
            assert_eq!(got.message(), s.message());
        }
        let mut empty = HeaderMap::new();
        rewrite_headers(&mut empty);
        assert!(empty.is_empty());
    }
}
