//! Sans-IO HTTP/1.1: request heads, body decoders and response encoding over byte buffers.
//! Nothing here touches a socket; the server feeds bytes in and takes bytes out.

pub mod body;
pub mod date;
pub mod error;
pub mod head;
pub mod response;

pub use body::{BodyDecoder, Decoded};
pub use date::DateCache;
pub use error::{ChunkError, RequestError};
pub use head::{
    header_storage, parse_head, Framing, Head, HeadLimits, HeadScanner, HeadSpan, Version,
};
pub use response::Response;
