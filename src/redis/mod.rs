//! Comet across hosts through Redis: the RESP codec ([`resp`]), the atomic publish and the
//! catch-up read as Lua scripts ([`scripts`]), the sans-IO state machine of the two Redis
//! connections ([`session`]) and its non-blocking I/O in a `mio::Poll` ([`link`]). Nothing
//! here runs unless `--redis` is given.

pub mod link;
pub mod resp;
pub mod scripts;
pub mod session;
