//! Every way a request can be refused, and the one place each maps to a status code.

use std::fmt;

/// Why a request (head or body) cannot be served. One variant per cause, so a log line and a
/// test can name the exact reason; [`RequestError::status`] is the only status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The head did not end within the head-size limit.
    HeadTooLarge,
    /// More header fields than the header-count limit.
    TooManyHeaders,
    /// The request-target is longer than its limit.
    TargetTooLong,
    /// An `HTTP/x.y` version other than 1.0 and 1.1.
    UnsupportedVersion,
    /// The request line or a header line is not valid HTTP/1.1 syntax (obs-fold, whitespace
    /// before a colon and invalid bytes land here too).
    MalformedHead,
    /// The request-target is in none of the forms a server accepts.
    BadTarget,
    /// HTTP/1.1 without exactly one Host header, or one with an invalid value (RFC 9112 §3.2).
    BadHost,
    /// Content-Length and Transfer-Encoding both present (RFC 9112 §6.1).
    ConflictingFraming,
    /// Content-Length values that differ or are not a decimal number (RFC 9112 §6.3).
    BadContentLength,
    /// Transfer-Encoding whose final coding is not chunked, chunked applied twice, or
    /// Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1, §6.3).
    BadTransferEncoding,
    /// A transfer coding we do not implement before the final chunked (RFC 9112 §6.1: 501).
    UnsupportedTransferCoding,
    /// An Expect value other than 100-continue (RFC 9110 §10.1.1).
    UnsupportedExpectation,
    /// Chunked framing is broken: size, extension, CRLF or trailer.
    BadChunk(ChunkError),
    /// The connection ended before the body did.
    IncompleteBody,
    /// The body is larger than the route's buffered limit.
    BodyTooLarge,
    /// A request line with no end of its method within the head limit: longer than any
    /// method we implement (RFC 9112 §3).
    MethodTooLong,
    /// The head, or the next byte of the body, did not arrive in time.
    Timeout,
}

/// What exactly is wrong with chunked framing (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line with no hex digits or with a byte that cannot follow them.
    BadSize,
    /// A chunk size that does not fit in 64 bits.
    SizeOverflow,
    /// A chunk extension longer than we are willing to skip, or with control bytes.
    BadExtension,
    /// Chunk data not followed by CRLF: the chunk is longer than declared.
    MissingCrlf,
    /// A line ended by a bare LF where CRLF is required.
    BareLf,
    /// The trailer section is larger than the head-size limit.
    TrailerTooLarge,
    /// A trailer line that is not a field line.
    BadTrailer,
}

impl RequestError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::TargetTooLong => 414,
            RequestError::UnsupportedVersion => 505,
            RequestError::UnsupportedTransferCoding | RequestError::MethodTooLong => 501,
            RequestError::UnsupportedExpectation => 417,
            RequestError::BodyTooLarge => 413,
            RequestError::Timeout => 408,
            RequestError::MalformedHead
            | RequestError::BadTarget
            | RequestError::BadHost
            | RequestError::ConflictingFraming
            | RequestError::BadContentLength
            | RequestError::BadTransferEncoding
            | RequestError::BadChunk(_)
            | RequestError::IncompleteBody => 400,
        }
    }

    /// A short, human-readable reason: the error response's body and the log line.
    pub fn reason(self) -> &'static str {
        match self {
            RequestError::HeadTooLarge => "request head too large",
            RequestError::TooManyHeaders => "too many header fields",
            RequestError::TargetTooLong => "request-target too long",
            RequestError::UnsupportedVersion => "HTTP version not supported",
            RequestError::MalformedHead => "malformed request head",
            RequestError::BadTarget => "invalid request-target",
            RequestError::BadHost => "HTTP/1.1 needs exactly one valid Host header",
            RequestError::ConflictingFraming => "both Content-Length and Transfer-Encoding",
            RequestError::BadContentLength => "invalid Content-Length",
            RequestError::BadTransferEncoding => "Transfer-Encoding must end in chunked, once",
            RequestError::UnsupportedTransferCoding => "transfer coding not implemented",
            RequestError::UnsupportedExpectation => "only Expect: 100-continue is supported",
            RequestError::BadChunk(ChunkError::BadSize) => "invalid chunk size",
            RequestError::BadChunk(ChunkError::SizeOverflow) => "chunk size overflows",
            RequestError::BadChunk(ChunkError::BadExtension) => "invalid chunk extension",
            RequestError::BadChunk(ChunkError::MissingCrlf) => "chunk data longer than its size",
            RequestError::BadChunk(ChunkError::BareLf) => "bare LF in chunked framing",
            RequestError::BadChunk(ChunkError::TrailerTooLarge) => "trailer section too large",
            RequestError::BadChunk(ChunkError::BadTrailer) => "malformed trailer field",
            RequestError::IncompleteBody => "connection closed before the body ended",
            RequestError::BodyTooLarge => "request body too large",
            RequestError::Timeout => "request not received in time",
            RequestError::MethodTooLong => "method not implemented",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for RequestError {}

impl From<ChunkError> for RequestError {
    fn from(e: ChunkError) -> Self {
        RequestError::BadChunk(e)
    }
}

/// The reason phrase of a status code, for the status line. Unknown codes get an empty phrase,
/// which RFC 9112 §4 allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_a_client_or_server_error_with_a_phrase() {
        let all = [
            RequestError::HeadTooLarge,
            RequestError::TooManyHeaders,
            RequestError::TargetTooLong,
            RequestError::UnsupportedVersion,
            RequestError::MalformedHead,
            RequestError::BadTarget,
            RequestError::BadHost,
            RequestError::ConflictingFraming,
            RequestError::BadContentLength,
            RequestError::BadTransferEncoding,
            RequestError::UnsupportedTransferCoding,
            RequestError::UnsupportedExpectation,
            RequestError::BadChunk(ChunkError::BadSize),
            RequestError::IncompleteBody,
            RequestError::BodyTooLarge,
            RequestError::Timeout,
            RequestError::MethodTooLong,
        ];
        for e in all {
            assert!((400..600).contains(&e.status()), "{e:?}");
            assert!(!reason_phrase(e.status()).is_empty(), "{e:?}");
            assert!(!e.reason().is_empty());
        }
    }
}
