//! `GET /stream/NAME`: the output of the operator's command NAME, streamed as it is written
//! (`GET /stream` runs the command named `stream`). Written on the public stream primitive:
//! the command is a [`Source`] whose pipe the loop polls; this module spawns it, enforces
//! `--exec-time-limit` and the kill grace, reaps it, and names its exit in the trailer.

use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::response::NO_STORE;
use crate::http::{Head, Response};
use crate::router::{Look, Polled, Route, ServerState, Source};
use crate::server::child::{self, Spawned, REAP_INTERVAL};
use crate::server::syscalls::Process;
use crate::sys::Signal;

/// The route for `/stream` and `/stream/*`; the commands and their limits come from `config`.
/// Route it [`without_head`](crate::Router::without_head): a HEAD must not run a command.
pub fn stream(config: &Config) -> impl Fn(&Head<'_>) -> Route {
    let config = Rc::new(config.clone());
    move |head| {
        let name = head
            .path
            .strip_prefix("/stream/")
            .unwrap_or("stream")
            .to_string();
        let config = Rc::clone(&config);
        Route::Stream(Box::new(move |server: &mut ServerState<'_>| {
            start(&name, &config, server)
        }))
    }
}

/// Runs the command `name`, unless it is unknown (404) or too many run (503).
fn start(name: &str, config: &Config, server: &mut ServerState<'_>) -> Result<Polled, Response> {
    let command = config.commands.iter().find(|(n, _)| n == name);
    let Some((_, text)) = command else {
        return Err(Response::text(404, "no such command\n"));
    };
    if server.processes_running() >= config.exec_max_running {
        eprintln!("miohttpd: {}: too many commands running", peer(server));
        return Err(super::come_back_later("too many commands running\n"));
    }
    let Spawned { child, stdout } = match child::spawn(text, config, server.stats()) {
        Ok(spawned) => spawned,
        Err(e) => {
            let peer = peer(server);
            eprintln!("miohttpd: {peer}: command {name} could not start: {e}");
            return Err(Response::text(500, "the command could not start\n"));
        }
    };
    server.process_started();
    let limit = config.exec_time_limit;
    Ok(Polled {
        pipe: stdout,
        content_type: "text/plain; charset=utf-8".into(),
        headers: vec![
            ("X-Content-Type-Options".into(), "nosniff".into()),
            (NO_STORE.0.into(), NO_STORE.1.into()),
        ],
        trailer: Some("X-Exit-Status"),
        source: Box::new(Command {
            child,
            exit: None,
            limit_at: (!limit.is_zero()).then(|| server.now() + limit),
            kill_grace: config.exec_kill_grace,
            ending: Ending::Running,
        }),
    })
}

/// The client, for a log line (empty once its connection is gone).
fn peer(server: &ServerState<'_>) -> String {
    server
        .peer()
        .map_or_else(String::new, |peer| peer.to_string())
}

/// A running command behind a stream.
struct Command {
    child: Process,
    exit: Option<ExitStatus>,
    /// When `--exec-time-limit` ends the command.
    limit_at: Option<Instant>,
    kill_grace: Duration,
    ending: Ending,
}

/// How far the command has been told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Running,
    /// SIGTERM went to its group (the time limit, or shutdown): SIGKILL follows at `kill_at`.
    Terminated {
        kill_at: Instant,
    },
    /// SIGKILL went to its group.
    Killed,
}

impl Source for Command {
    fn first_look(&self) -> Option<Instant> {
        self.limit_at
    }

    /// Reaps the child if it exited and enforces the time limit. The stream is over once the
    /// exit is known and the pipe at EOF; until then the limits bind the whole group: after
    /// the shell exits, what it started may still hold the pipe open.
    fn look(&mut self, pipe_open: bool, server: &mut ServerState<'_>) -> Look {
        let child = &mut self.child;
        let now = server.now();
        if self.exit.is_none() {
            if let Ok(Some(status)) = child.try_wait(server.stats()) {
                self.exit = Some(status);
            }
        }
        if let (Some(status), false) = (self.exit, pipe_open) {
            server.process_exited();
            return Look::Done(Some(child::describe_exit(status)));
        }
        match self.ending {
            Ending::Terminated { kill_at } if now >= kill_at => {
                child::signal_group(child, Signal::Kill, server.stats());
                self.ending = Ending::Killed;
            }
            Ending::Running if self.limit_at.is_some_and(|limit_at| now >= limit_at) => {
                eprintln!("miohttpd: {}: command over its time limit", peer(server));
                child::signal_group(child, Signal::Terminate, server.stats());
                self.ending = Ending::Terminated {
                    kill_at: now + self.kill_grace,
                };
            }
            _ => {}
        }
        let next = [
            self.exit.is_none().then(|| now + REAP_INTERVAL),
            match self.ending {
                Ending::Running => self.limit_at,
                Ending::Terminated { kill_at } => Some(kill_at),
                Ending::Killed => None,
            },
        ];
        // While the pipe is open, only the limits need a timer; after its EOF, look for the
        // exit every REAP_INTERVAL.
        let next = if pipe_open { &next[1..] } else { &next[..] };
        Look::Again(next.iter().flatten().min().copied())
    }

    /// Shutdown: SIGTERM now and SIGKILL after the kill grace, as at the time limit.
    fn stop(&mut self, server: &mut ServerState<'_>) {
        if self.ending == Ending::Running {
            child::signal_group(&self.child, Signal::Terminate, server.stats());
            self.ending = Ending::Terminated {
                kill_at: server.now() + self.kill_grace,
            };
        }
    }

    /// The client went first: the loop's reaper ends the group and reaps it. Its shell may
    /// have exited already while something it started still runs: the group is ended either
    /// way.
    fn abandon(self: Box<Self>, server: &mut ServerState<'_>) {
        server.reap_process(self.child, self.kill_grace);
    }
}
