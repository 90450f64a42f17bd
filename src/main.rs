//! The miohttpd binary: flags to config, then the loop with the built-in routes.

#![deny(unsafe_code)]

fn main() {
    miohttpd::serve_from_args(miohttpd::handlers::builtin_router);
}
