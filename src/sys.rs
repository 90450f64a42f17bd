//! The raw system calls the safe APIs do not offer, each with why. All `unsafe` lives here:
//! the crate denies it everywhere else (`#![deny(unsafe_code)]` in `lib.rs`).

#![allow(unsafe_code)]

use std::io;

/// Raises the soft limit on open files to the hard limit and returns the new soft limit.
/// Every connection is a file descriptor, and a default soft limit (1024 on Linux, 256 on
/// macOS) would cap a server meant for tens of thousands of parked clients; the hard limit
/// is what the administrator allows. Unsafe because neither std nor mio nor socket2 wraps
/// getrlimit/setrlimit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let mut raised = limit;
        raised.rlim_cur = limit.rlim_max;
        // macOS refuses a soft limit above OPEN_MAX even when the hard limit is unlimited.
        #[cfg(target_os = "macos")]
        {
            raised.rlim_cur = raised.rlim_cur.min(libc::OPEN_MAX as libc::rlim_t);
        }
        // SAFETY: setrlimit reads one rlimit from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    // rlim_t is u64 on Linux and macOS but signed on some BSDs.
    #[allow(clippy::useless_conversion)]
    Ok(u64::try_from(limit.rlim_cur).unwrap_or(0))
}

/// The soft limit on open files now (what accept(2) runs into); usize::MAX when unlimited
/// or unknown. Unsafe for the same reason: no safe getrlimit in our dependencies.
pub fn open_files_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return usize::MAX;
    }
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit.rlim_cur)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX)
}

/// The signals the server sends to the commands it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Kill,
}

/// Sends `signal` to every process in the group `group` (a command and what it started).
/// std's `Child::kill` reaches only the child itself, and a shell's children would live on
/// holding the pipe open; std has no way to signal a group, so kill(2) with a negative pid.
pub fn signal_process_group(group: u32, signal: Signal) -> io::Result<()> {
    let signal = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    let group =
        libc::pid_t::try_from(group).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if group <= 1 {
        // -1 would signal every process we may signal; never.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(-group, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether any process of the group `group` still exists (zombies included, until reaped).
/// kill(2) with signal 0 is the only probe of a group, and std offers none.
pub fn process_group_exists(group: u32) -> bool {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the group exists and may be signalled.
    group > 1 && unsafe { libc::kill(-group, 0) } == 0
}

/// A wall-clock time broken down in the server's local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 0 = January.
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// East of UTC.
    pub utc_offset_seconds: i64,
}

/// `unix_seconds` in local time, for the access log's `$time_local`. std has no time zones;
/// localtime_r reads the zone (TZ, /etc/localtime) once per process and then makes no
/// syscall; a time zone crate would be a dependency for one log field. A time it cannot
/// convert comes back as the epoch in UTC.
pub fn local_time(unix_seconds: u64) -> LocalTime {
    let time = libc::time_t::try_from(unix_seconds).unwrap_or(0);
    // SAFETY: an all-zero tm is a valid value (integers and, on glibc, a null tm_zone).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads one time_t and writes one tm, both ours; the _r form keeps
    // no shared static buffer.
    if unsafe { libc::localtime_r(&time, &mut tm) }.is_null() {
        return LocalTime {
            year: 1970,
            month: 0,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            utc_offset_seconds: 0,
        };
    }
    let field = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
    LocalTime {
        year: tm.tm_year + 1900,
        month: field(tm.tm_mon),
        day: field(tm.tm_mday),
        hour: field(tm.tm_hour),
        minute: field(tm.tm_min),
        second: field(tm.tm_sec),
        #[allow(clippy::unnecessary_cast)]
        utc_offset_seconds: tm.tm_gmtoff as i64,
    }
}

/// Sets TCP_DEFER_ACCEPT on a listening socket: the kernel completes the handshake but
/// wakes accept only once the client has sent data (or after about `seconds`), so a
/// connection that never sends costs the server no accept and no read. socket2 has no
/// setter for it.
#[cfg(target_os = "linux")]
pub fn set_tcp_defer_accept(socket: &impl std::os::fd::AsRawFd, seconds: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int we own, of the length we pass.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TCP_DEFER_ACCEPT as the kernel keeps it (it rounds to its retransmission steps); socket2
/// has no getter either.
#[cfg(target_os = "linux")]
pub fn tcp_defer_accept(socket: &impl std::os::fd::AsRawFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the c_int we own and updates `len`.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).unwrap_or(0))
}

/// Takes ownership of a listening socket another process left at `fd`: systemd's socket
/// activation (sd_listen_fds(3)) passes them as fds 3 and up, and by that protocol nothing
/// else in this process owns them. std can only adopt a descriptor through `from_raw_fd`,
/// which is unsafe because it cannot know that; the caller ([`crate::systemd`]) takes each
/// fd once, after clearing the variables that named it. The fd is checked to be open, and
/// marked close-on-exec so the commands the server runs do not inherit it.
pub fn adopt_inherited_listener(fd: std::os::fd::RawFd) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: F_GETFD reads the descriptor's flags and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open (above) and, by the activation protocol, owned by no one else
    // in this process; the caller adopts each fd at most once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    socket2::SockRef::from(&listener).set_cloexec(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_time_is_a_plausible_date() {
        let t = super::local_time(86_400 * 365 * 30);
        assert!((1999..=2001).contains(&t.year), "{t:?}");
        assert!(
            t.month < 12 && (1..=31).contains(&t.day) && t.hour < 24,
            "{t:?}"
        );
        assert!(t.utc_offset_seconds.abs() <= 14 * 3600, "{t:?}");
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_open_files_limit().unwrap();
        assert!(soft >= 64, "{soft}");
        assert_eq!(super::raise_open_files_limit().unwrap(), soft, "idempotent");
    }
}
