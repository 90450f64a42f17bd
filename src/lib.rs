//! miohttpd: a small, fast HTTP/1.1 server on one mio readiness loop.
//!
//! The public API: [`Config`] (every knob), [`Server`] (bind, then run the loop), and the
//! handler API in [`router`]: a [`Service`] chooses a [`Route`] from the request head alone,
//! before any body byte is read, and a handler declares there whether it takes its body
//! buffered (whole, under a limit) or streamed (a [`BodySink`] fed as bytes arrive).
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

pub mod comet;
pub mod config;
pub mod handlers;
pub mod http;
pub mod router;
pub mod server;
pub mod sys;

pub use config::{Command, Config, LogTarget, StderrMode};
pub use http::{Head, Response, Version};
pub use router::{BodySink, BufferedHandler, Payload, Request, Route, Router, Service};
pub use server::{Server, Stopped};

/// For fuzz targets, property tests and timer tests: connections of the real server over
/// scripted bytes under a scripted clock. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::server::fuzzing::{run, serve_chunks, ClientId, Driver, Step, Trace};
}

/// Parses the command line, binds, prints the one line saying where it listens, and runs
/// the loop: what `main` and the examples share. Exits the process on usage errors.
pub fn serve_from_args<S: Service>(make_service: impl FnOnce(&Config) -> S) -> ! {
    let config = match Config::from_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("miohttpd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = sys::raise_open_files_limit() {
        eprintln!("miohttpd: cannot raise the open-files limit: {e}");
    }
    let service = make_service(&config);
    let server = match Server::bind(config.clone(), service) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("miohttpd: cannot listen on {}: {e}", config.listen);
            std::process::exit(1);
        }
    };
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "miohttpd listening on http://{}",
            server.local_addr()
        );
        if let Some(admin) = server.admin_addr() {
            let _ = writeln!(stdout, "miohttpd admin listening on http://{admin}");
        }
        let _ = stdout.flush();
    }
    match server.run() {
        Ok(Stopped::Gracefully) => std::process::exit(0),
        Ok(Stopped::AtOnce) => std::process::exit(1),
        Err(e) => {
            eprintln!("miohttpd: event loop failed: {e}");
            std::process::exit(1);
        }
    }
}
