//! `GET /metrics`: the server's counters in the Prometheus text format. An ordinary handler
//! answering from the server's state; the admin listener routes here too.

use std::rc::Rc;

use crate::http::{Head, Response};
use crate::router::{Request, Route, ServerState};

pub fn metrics(_head: &Head<'_>) -> Route {
    Route::Server {
        limit: None,
        handler: Rc::new(render),
    }
}

fn render(_request: Request, server: &mut ServerState<'_>) -> Response {
    Response::bytes(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        server.metrics().into_bytes(),
    )
    .no_store()
}
