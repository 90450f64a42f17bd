//! `POST /` and `POST /md5` (and `PUT` there and on unclaimed paths): the MD5 of the request
//! body, hashed as it streams in, so any size takes the same memory.

use md5::{Digest, Md5};

use crate::http::{Head, Response};
use crate::router::BodySink;

/// A sink that hashes every body byte it is given.
#[derive(Default)]
pub struct Md5Sink {
    hasher: Md5,
}

/// The route's start: one fresh hasher per request.
pub fn start(_head: &Head<'_>) -> Box<dyn BodySink> {
    Box::new(Md5Sink::default())
}

impl BodySink for Md5Sink {
    fn data(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    fn finish(self: Box<Self>) -> Response {
        let digest = self.hasher.finalize();
        Response::text(200, hex(&digest)).no_store()
    }
}

/// Lowercase hex, as md5sum prints it.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_rfc_1321_vectors_across_any_split() {
        let table: &[(&[u8], &str)] = &[
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in table {
            for piece in 1..=input.len().max(1) {
                let mut sink: Box<dyn BodySink> = Box::new(Md5Sink::default());
                for part in input.chunks(piece) {
                    sink.data(part);
                }
                let response = sink.finish();
                assert_eq!(response.body.as_ref(), want.as_bytes(), "piece {piece}");
                assert_eq!(response.content_type, "text/plain");
            }
        }
    }
}
