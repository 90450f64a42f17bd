//! The raw system calls the safe APIs do not offer, each with why. All `unsafe` lives here.

use std::io;

/// Raises the soft limit on open files to the hard limit and returns the new soft limit.
/// Every connection is a file descriptor, and a default soft limit (1024 on Linux, 256 on
/// macOS) would cap a server meant for tens of thousands of parked clients; the hard limit
/// is what the administrator allows.
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
/// or unknown.
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
/// holding the pipe open.
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
pub fn process_group_exists(group: u32) -> bool {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the group exists and may be signalled.
    group > 1 && unsafe { libc::kill(-group, 0) } == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_open_files_limit().unwrap();
        assert!(soft >= 64, "{soft}");
        assert_eq!(super::raise_open_files_limit().unwrap(), soft, "idempotent");
    }
}
