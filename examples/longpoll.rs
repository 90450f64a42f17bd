//! A user-defined long-poll, written only against the public handler API, with the same
//! primitives the built-in `/wait` and `/notify` use:
//!
//! - `GET /ticket/{id}[?after=ID]` parks on the channel `ticket-{id}` until the next message
//!   (after message `ID`, if given), and answers with it; 204 at `--comet-timeout`.
//! - `POST /ticket/{id}` publishes the body (at most 64 KiB) on that channel and answers with
//!   the number of waiters it reached; `X-Comet-Id` names the message.
//!
//! `cargo run --example longpoll -- --listen 127.0.0.1:8083`, then
//! `curl localhost:8083/ticket/7` in one shell and `curl -d done localhost:8083/ticket/7` in
//! another.

use std::rc::Rc;

use miohttpd::comet::ID_HEADER;
use miohttpd::{Head, Park, Request, Response, Route, Router, ServerState};

const BODY_LIMIT: usize = 64 * 1024;

/// The ticket id of `/ticket/{id}`: digits only, so the channel name is always valid.
fn ticket(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/ticket/")?;
    let digits = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    digits.then_some(id)
}

fn bad_ticket() -> Route {
    Route::Respond(Response::text(404, "tickets are /ticket/DIGITS\n"))
}

/// `GET /ticket/{id}`: park until the ticket's next message.
fn wait(head: &Head<'_>) -> Route {
    let Some(id) = ticket(head.path) else {
        return bad_ticket();
    };
    let after = head.query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("after="))
            .map(str::to_string)
    });
    Route::Park(Park::once(format!("ticket-{id}")).after(after))
}

/// `POST /ticket/{id}`: publish the body to the ticket's waiters.
fn publish(request: Request, server: &mut ServerState<'_>) -> Response {
    let Some(id) = ticket(&request.path) else {
        return Response::text(404, "tickets are /ticket/DIGITS\n");
    };
    let channel = format!("ticket-{id}");
    let body = request.body.into_boxed_slice();
    match server.publish(&channel, "text/plain", |_reached| body) {
        Ok(published) => Response::text(200, format!("{}\n", published.reached))
            .with_header(ID_HEADER, published.id.to_string()),
        Err(refused) => refused.response(),
    }
}

fn main() {
    miohttpd::serve_from_args(|_config| {
        let publish = Rc::new(publish);
        Router::new()
            // A HEAD would get neither the message nor an end to wait for: the router answers
            // it 405, with an Allow naming what the path does take.
            .route("GET", "/ticket/*", wait)
            .without_head()
            .route("POST", "/ticket/*", move |head| match ticket(head.path) {
                Some(_) => Route::Server {
                    limit: Some(BODY_LIMIT),
                    handler: publish.clone(),
                },
                None => bad_ticket(),
            })
    });
}
