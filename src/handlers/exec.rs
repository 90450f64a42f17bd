//! `GET /stream/NAME`: the output of the operator's command NAME, streamed as it is written
//! (`GET /stream` runs the command named `stream`). The route only names the command; the
//! loop runs it.

use super::refuse_head;
use crate::http::Head;
use crate::router::Route;

pub fn stream(head: &Head<'_>) -> Route {
    if head.is_head_method() {
        return refuse_head();
    }
    let name = head.path.strip_prefix("/stream/").unwrap_or("stream");
    Route::Exec {
        name: name.to_string(),
    }
}
