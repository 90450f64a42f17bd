//! systemd's two protocols, spoken without libsystemd: socket activation (sd_listen_fds(3):
//! listening sockets passed as fds 3 and up, named by `LISTEN_PID`, `LISTEN_FDS` and
//! `LISTEN_FDNAMES`) and readiness notification (sd_notify(3): `READY=1` and `STOPPING=1`
//! datagrams to `$NOTIFY_SOCKET`). Both read their variables once and remove them, so the
//! commands the server runs neither inherit the sockets' names nor speak for the server.

use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::OnceLock;

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// The listening sockets systemd passed to this process, if any; the activation variables
/// are removed either way. An error when they are there but wrong: they were meant for us
/// and serving elsewhere would be a surprise.
pub fn take_listeners() -> Result<Option<Vec<std::net::TcpListener>>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let Some(range) = passed_fds(pid.as_deref(), fds.as_deref(), std::process::id())? else {
        return Ok(None);
    };
    let names: Vec<&str> = names.as_deref().unwrap_or("").split(':').collect();
    let mut listeners = Vec::with_capacity(range.len());
    for (i, fd) in range.enumerate() {
        let name = names
            .get(i)
            .copied()
            .filter(|n| !n.is_empty())
            .unwrap_or("unknown");
        let listener = crate::sys::adopt_inherited_listener(fd)
            .map_err(|e| format!("socket activation: fd {fd} ({name}): {e}"))?;
        listeners.push(listener);
    }
    Ok(Some(listeners))
}

/// The fds passed to `me`, from the variables' values: none when `LISTEN_PID` is absent or
/// names another process (the variables were inherited from a parent that was activated).
fn passed_fds(
    pid: Option<&str>,
    fds: Option<&str>,
    me: u32,
) -> Result<Option<Range<RawFd>>, String> {
    let Some(pid) = pid else {
        return Ok(None);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID is not a process id: {pid:?}"))?;
    if pid != me {
        return Ok(None);
    }
    // As sd_listen_fds(3): no LISTEN_FDS, no sockets.
    let Some(fds) = fds else {
        return Ok(None);
    };
    let count: RawFd = fds
        .trim()
        .parse()
        .ok()
        .filter(|&n| (0..=4096).contains(&n))
        .ok_or_else(|| format!("LISTEN_FDS is not a count of fds: {fds:?}"))?;
    if count == 0 {
        return Ok(None);
    }
    Ok(Some(LISTEN_FDS_START..LISTEN_FDS_START + count))
}

/// Where notifications go: read from `$NOTIFY_SOCKET` by [`take_notify_socket`].
static NOTIFY_SOCKET: OnceLock<Option<String>> = OnceLock::new();

/// Reads and removes `$NOTIFY_SOCKET`; later [`notify`] calls send there. Without it (not
/// run by systemd with `Type=notify`) they do nothing.
pub fn take_notify_socket() {
    let socket = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    std::env::remove_var("NOTIFY_SOCKET");
    let _ = NOTIFY_SOCKET.set(socket);
}

/// Sends one sd_notify(3) state line (`READY=1`, `STOPPING=1`) if systemd asked for them.
/// A failure is logged, never fatal: the server serves whether or not systemd hears.
pub fn notify(state: &str) {
    let Some(Some(address)) = NOTIFY_SOCKET.get() else {
        return;
    };
    if let Err(e) = send(address, state) {
        eprintln!("miohttpd: cannot notify systemd at {address}: {e}");
    }
}

fn send(address: &str, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = address.strip_prefix('@') {
        // An abstract socket: a name in the kernel, not a file (Linux only).
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let to = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &to)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::ErrorKind::Unsupported.into());
        }
    }
    if !address.starts_with('/') {
        // vsock addresses (vsock:CID:PORT) are for virtual machines; not spoken here.
        return Err(std::io::ErrorKind::Unsupported.into());
    }
    socket.send_to(state.as_bytes(), address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_are_taken_only_when_meant_for_this_process() {
        type Row<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<Option<Range<RawFd>>, ()>,
        );
        let table: &[Row] = &[
            (None, None, Ok(None)),
            (None, Some("2"), Ok(None)),
            (Some("42"), Some("2"), Ok(Some(3..5))),
            (Some("42"), Some("1"), Ok(Some(3..4))),
            (Some("42"), Some("0"), Ok(None)),
            (Some("43"), Some("2"), Ok(None)),
            (Some("42"), None, Ok(None)),
            (Some("42"), Some("-1"), Err(())),
            (Some("42"), Some("many"), Err(())),
            (Some("self"), Some("1"), Err(())),
        ];
        for (pid, fds, expected) in table {
            let got = passed_fds(*pid, *fds, 42).map_err(|_| ());
            assert_eq!(&got, expected, "{pid:?} {fds:?}");
        }
    }
}
