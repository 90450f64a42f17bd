//! The built-in routes, written with the same public [`Router`] API a user would use.

pub mod auth;
pub mod comet;
pub mod exec;
pub mod md5;

use crate::config::Config;
use crate::http::Response;
use crate::router::{Route, Router};
use auth::guarded;

/// For GET routes whose answer is a wait or a stream: a HEAD would get neither the body nor
/// an end to wait for, so it is refused rather than mapped onto GET.
fn refuse_head() -> Route {
    Route::Respond(Response::text(405, "use GET\n").with_header("Allow", "GET"))
}

/// The conventional benchmark body.
pub const PLAINTEXT: &str = "Hello, World!";

/// Every built-in route: `POST /` and `POST /md5` (streamed MD5 of the body; `PUT` too, on
/// them and on any path no other route claims, as `curl -T FILE URL/` sends),
/// `GET /plaintext`, the comet routes (`GET /` counts the parked waiters) and
/// `GET /stream/NAME` (a configured command's output), and `GET /metrics` (the loop's own
/// counters). With an admin token, publishing and `/metrics` (and, if asked, the streamed
/// commands) need it.
pub fn builtin_router(config: &Config) -> Router {
    let admin = || config.admin_token.clone();
    let exec_token = || {
        config
            .admin_token
            .clone()
            .filter(|_| config.exec_require_token)
    };
    let mut router = Router::new()
        .streamed("POST", "/", md5::start)
        .streamed("POST", "/md5", md5::start)
        .streamed("PUT", "/", md5::start)
        .streamed("PUT", "/md5", md5::start)
        .streamed("PUT", "/*", md5::start)
        .fallback()
        .respond("GET", "/plaintext", |_| Response::text(200, PLAINTEXT))
        .route("GET", "/", comet::count)
        .route("GET", "/metrics", guarded(admin(), |_| Route::Metrics));
    for path in ["/wait", "/wait/*"] {
        router = router.route("GET", path, comet::wait).without_head();
    }
    for path in ["/notify", "/notify/*"] {
        let notify_body = comet::notify_body(config.comet_body_limit);
        router = router
            .route("GET", path, guarded(admin(), comet::notify_count))
            .without_head()
            .route("POST", path, guarded(admin(), notify_body));
    }
    for path in ["/events", "/events/*"] {
        router = router.route("GET", path, comet::events).without_head();
    }
    for path in ["/stream", "/stream/*"] {
        router = router
            .route("GET", path, guarded(exec_token(), exec::stream))
            .without_head();
    }
    router
}
