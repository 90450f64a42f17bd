//! Operator commands run for `GET /stream/NAME`: spawning one in its own process group with
//! its stdout as a non-blocking pipe, and ending it (SIGTERM, SIGKILL after a grace) and
//! reaping it, also after its connection is gone, so no child becomes a zombie.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::stats::Stats;
use mio::unix::pipe;

use super::syscalls::Process;
use crate::config::{Config, StderrMode};
use crate::sys;

/// A running command and the read end of its stdout.
pub struct Spawned {
    pub child: Process,
    /// Counted once the connection takes it (`syscalls::Pipe`).
    pub stdout: pipe::Receiver,
}

/// Starts `SHELL -c TEXT`. Nothing from the request reaches it: the text is the operator's,
/// the environment the server's, stdin /dev/null. Its own process group lets one signal
/// reach the shell and everything it started.
pub fn spawn(text: &str, config: &Config, stats: &mut Stats) -> io::Result<Spawned> {
    let mut command = Command::new(&config.exec_shell);
    let script;
    let text = match config.exec_stderr {
        // The shell sends its own stderr, and so every command's, to stdout.
        StderrMode::Merge => {
            script = format!("exec 2>&1\n{text}");
            script.as_str()
        }
        _ => text,
    };
    command
        .arg("-c")
        .arg(text)
        .stdin(Stdio::null())
        .stderr(match config.exec_stderr {
            StderrMode::Inherit => Stdio::inherit(),
            StderrMode::Merge | StderrMode::Discard => Stdio::null(),
        })
        .process_group(0);
    let null_stderr = config.exec_stderr != StderrMode::Inherit;
    let (child, stdout) = Process::spawn(&mut command, null_stderr, stats)?;
    Ok(Spawned { child, stdout })
}

/// Sends `signal` to the child's whole process group.
pub fn signal_group(child: &Process, signal: sys::Signal, stats: &mut Stats) {
    // The group id is the child's pid (process_group(0) at spawn).
    if let Err(e) = child.signal_group(signal, stats) {
        // ESRCH: already gone, which is what we wanted.
        if e.raw_os_error() != Some(libc::ESRCH) {
            eprintln!("miohttpd: signalling command {}: {e}", child.id());
        }
    }
}

/// How a command ended, as the `X-Exit-Status` trailer says it.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".into(),
    }
}

/// How many commands run, and the children whose connections are gone: terminated,
/// awaiting their exit, killed if they outlast the grace.
#[derive(Default)]
pub struct Children {
    /// Commands still attached to a connection.
    streaming: usize,
    ending: Vec<Ending>,
}

struct Ending {
    child: Process,
    kill_at: Instant,
    /// The group leader (the shell) has exited and been reaped.
    reaped: bool,
    killed: bool,
}

/// How often the children being ended are looked at.
pub const REAP_INTERVAL: Duration = Duration::from_millis(20);

impl Children {
    /// Commands running now, streaming or ending: what `--exec-max-running` bounds.
    pub fn running(&self) -> usize {
        self.streaming + self.ending.len()
    }

    /// Commands attached to a connection, streaming its output.
    pub fn streaming(&self) -> usize {
        self.streaming
    }

    pub fn started(&mut self) {
        self.streaming += 1;
    }

    /// A streaming command exited and its connection reaped it.
    pub fn exited(&mut self) {
        self.streaming -= 1;
    }

    /// Takes a streaming command whose connection is gone: SIGTERM now, SIGKILL after `grace`.
    pub fn end(&mut self, child: Process, now: Instant, grace: Duration, stats: &mut Stats) {
        self.streaming -= 1;
        signal_group(&child, sys::Signal::Terminate, stats);
        self.ending.push(Ending {
            child,
            kill_at: now + grace,
            reaped: false,
            killed: false,
        });
    }

    /// At exit: every group still being ended gets its SIGKILL now.
    pub fn kill_all(&mut self, stats: &mut Stats) {
        for ending in &mut self.ending {
            // A reaped leader's group is signalled only while it provably has members.
            let members_left = !ending.reaped || ending.child.group_exists(stats);
            if !ending.killed && members_left {
                signal_group(&ending.child, sys::Signal::Kill, stats);
                ending.killed = true;
            }
            if !ending.reaped {
                let _ = ending.child.wait(stats);
                ending.reaped = true;
            }
        }
        self.ending.clear();
    }

    pub fn any_ending(&self) -> bool {
        !self.ending.is_empty()
    }

    /// Reaps the ending children that exited, and kills the groups past their grace. A group
    /// is followed until nothing of it is left or it got its SIGKILL: the shell may die of
    /// SIGTERM while something it started ignores it.
    pub fn poll(&mut self, now: Instant, stats: &mut Stats) {
        self.ending.retain_mut(|ending| {
            if !ending.reaped && matches!(ending.child.try_wait(stats), Ok(Some(_)) | Err(_)) {
                ending.reaped = true;
            }
            // Once the leader is reaped its pid may in principle be reused; the group is only
            // signalled again while it provably still has members.
            if ending.reaped && !ending.child.group_exists(stats) {
                return false;
            }
            if !ending.killed && now >= ending.kill_at {
                signal_group(&ending.child, sys::Signal::Kill, stats);
                ending.killed = true;
            }
            !(ending.reaped && ending.killed)
        });
    }
}
