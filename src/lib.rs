//! miohttpd: a small, fast HTTP/1.1 server on one mio readiness loop.
//!
//! The public API: [`Config`] (every knob), [`Server`] (bind, then run the loop), and the
//! handler API in [`router`]: a [`Service`] chooses a [`Route`] from the request head alone,
//! before any body byte is read, and a handler declares there whether it takes its body
//! buffered (whole, under a limit) or streamed (a [`BodySink`] fed as bytes arrive), answers
//! from the server's state ([`ServerState`]: publish, count waiters, metrics), parks on a
//! named channel ([`Park`]), or streams a pipe the loop polls ([`Source`]). The built-in
//! routes (`handlers`) use these and nothing else; `examples/longpoll.rs` is a user's own
//! long-poll on them.
//!
//! ```no_run
//! use miohttpd::{Config, Request, Response, Router, Server};
//!
//! let router = Router::new()
//!     .respond("GET", "/hello", |_head| Response::text(200, "hi\n"))
//!     .buffered("POST", "/echo", 1 << 20, |request: Request| {
//!         Response::bytes(200, "application/octet-stream", request.body)
//!     });
//! let server = Server::bind(Config::default(), router)?;
//! println!("listening on http://{}", server.local_addr());
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

// Raw syscalls live in `sys`, the one module allowed unsafe code, each with why the safe API
// does not do.
#![deny(unsafe_code)]

pub mod bus;
pub mod comet;
pub mod config;
pub mod handlers;
pub mod http;
pub mod redis;
pub mod router;
pub mod server;
pub mod sys;
pub mod systemd;
pub mod workers;

pub use config::{Command, Config, LogTarget, StderrMode};
pub use http::{Head, Response, Version};
pub use router::{
    BodySink, BufferedHandler, Look, Park, ParkMode, Polled, Published, Request, Route, Router,
    ServerHandler, ServerState, Service, Source, StartStream,
};
pub use server::{Server, Stopped};

/// For fuzz targets, property tests and timer tests: connections of the real server over
/// scripted bytes under a scripted clock. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::server::fuzzing::{run, serve_chunks, ClientId, Driver, Step, Trace};
}

/// Parses the command line, binds (or takes systemd's sockets), prints a line per address it
/// listens on, tells systemd it is ready, and runs the loop: what `main` and the examples
/// share. Exits the process on usage errors (status 2).
pub fn serve_from_args<S: Service>(make_service: impl FnOnce(&Config) -> S) -> ! {
    let config = match Config::from_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help(text) | Command::Version(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("miohttpd: {e}");
            std::process::exit(2);
        }
    };
    // A worker started by a supervisor (`--workers N`): same flags, inherited sockets.
    if let Some(spec) = workers::WorkerSpec::take() {
        workers::serve_as_worker(spec, config, make_service);
    }
    // Before anything can fork: the commands the server runs must not see these.
    systemd::take_notify_socket();
    let activated = match systemd::take_listeners() {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("miohttpd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = sys::raise_open_files_limit() {
        eprintln!("miohttpd: cannot raise the open-files limit: {e}");
    }
    // With `--redis` the link lives in the supervisor's hub, so a host has one set of Redis
    // connections and one wiring whatever its worker count (one worker is still a worker).
    if config.workers.resolve() > 1 || config.redis.is_some() {
        // The supervisor serves nothing itself; each worker builds its own service.
        workers::supervisor::supervise(config, activated);
    }
    let service = make_service(&config);
    // Sockets systemd passed replace the --listen addresses.
    let server = match activated {
        Some(listeners) => Server::with_listeners(config, listeners, service),
        None => Server::bind(config, service),
    };
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("miohttpd: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        // Tests and scripts read the first line for the address.
        for addr in server.local_addrs() {
            let _ = writeln!(stdout, "miohttpd listening on http://{addr}");
        }
        if let Some(admin) = server.admin_addr() {
            let _ = writeln!(stdout, "miohttpd admin listening on http://{admin}");
        }
        let _ = stdout.flush();
    }
    // Every listener is listening: connections queue from here on, so systemd may start
    // what depends on the server.
    systemd::notify("READY=1");
    match server.run() {
        Ok(Stopped::Gracefully) => std::process::exit(0),
        Ok(Stopped::AtOnce) => std::process::exit(1),
        Err(e) => {
            eprintln!("miohttpd: event loop failed: {e}");
            std::process::exit(1);
        }
    }
}
