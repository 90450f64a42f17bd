//! The built-in routes, written with the same public [`Router`] API a user would use.

pub mod auth;
pub mod comet;
pub mod exec;
pub mod md5;
pub mod metrics;

use crate::config::Config;
use crate::http::{Head, Response};
use crate::router::{Route, Router};
use auth::guarded;

/// 503 with a hint to retry: the server is going away or full.
pub fn come_back_later(body: &'static str) -> Response {
    Response::text(503, body).with_header("Retry-After", "1")
}

/// The conventional benchmark body.
pub const PLAINTEXT: &str = "Hello, World!";

/// Every built-in route: `POST /` and `POST /md5` (streamed MD5 of the body; `PUT` too, on
/// them and on any path no other route claims, as `curl -T FILE URL/` sends),
/// `GET /plaintext`, the comet routes (`GET /` counts the parked waiters) and
/// `GET /stream/NAME` (a configured command's output), and `GET /metrics` (the loop's own
/// counters; with `--admin-listen` it is served there only, and is 404 here). With an admin
/// token, publishing and `/metrics` (and, if asked, the streamed commands) need it.
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
        .route("GET", "/metrics", guarded(admin(), metrics_here(config)));
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
            .route("GET", path, guarded(exec_token(), exec::stream(config)))
            .without_head();
    }
    router
}

/// `/metrics` on the main listener: the metrics, unless the admin listener serves them.
fn metrics_here(config: &Config) -> impl Fn(&Head<'_>) -> Route {
    let admin_elsewhere = config.admin_listen.is_some();
    move |head| {
        if admin_elsewhere {
            Route::Respond(Response::text(404, "not found\n"))
        } else {
            metrics::metrics(head)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{header_storage, parse_head, HeadLimits};
    use crate::router::Service;

    /// 0 for the metrics handler, else the status of the answer.
    fn metrics_status(config: &Config) -> u16 {
        let raw = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut storage = header_storage();
        let head = parse_head(raw, &mut storage, &HeadLimits::default()).unwrap();
        match Service::route(&builtin_router(config), &head) {
            Route::Server { .. } => 0,
            Route::Respond(response) => response.status,
            _ => 1,
        }
    }

    #[test]
    fn the_main_listener_hides_metrics_only_with_an_admin_listener() {
        let mut config = Config::default();
        assert_eq!(metrics_status(&config), 0);
        config.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(metrics_status(&config), 404);
    }
}
