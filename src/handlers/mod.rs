//! The built-in routes, written with the same public [`Router`] API a user would use.

pub mod md5;

use crate::http::Response;
use crate::router::Router;

/// The conventional benchmark body.
pub const PLAINTEXT: &str = "Hello, World!";

/// Every built-in route: `POST /` and `POST /md5` (streamed MD5 of the body) and
/// `GET /plaintext`.
pub fn builtin_router() -> Router {
    Router::new()
        .streamed("POST", "/", md5::start)
        .streamed("POST", "/md5", md5::start)
        .respond("GET", "/plaintext", |_| Response::text(200, PLAINTEXT))
}
