//! The bus between the supervisor and its workers (`--workers N`): one Unix socketpair per
//! worker carrying length-prefixed frames. This module owns the wire format only
//! ([`frame`]: sans-IO, bytes in and frames out); the sockets are the supervisor's and the
//! worker's. The protocol is written down in docs/architecture.md ("The worker bus").

pub mod frame;
pub mod hub;

pub use frame::{decode, encode, Frame, FrameError, FrameReader, MAX_FRAME};
