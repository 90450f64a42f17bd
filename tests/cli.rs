//! The command line: `--help` lists every flag with its default and exits 0; `--version`;
//! the forms `--listen` takes; the request-target limit's default.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::{exit_without_serving, Conn, Server, GET_PLAINTEXT};

#[test]
fn help_lists_every_flag_with_its_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_miohttpd"))
        .arg("--help")
        .output()
        .expect("run miohttpd --help");
    assert!(
        output.status.success(),
        "--help exited with {}",
        output.status
    );
    let help = String::from_utf8_lossy(&output.stdout);
    let flags = [
        ("--listen", "127.0.0.1:8080"),
        ("--max-head-size", "8192"),
        ("--max-headers", "100"),
        ("--max-target-size", "8000"),
        ("--read-buffer-size", "16384"),
        ("--body-buffer-size", "2097152"),
        ("--turn-bytes", "2097152"),
        ("--stats-interval", "[default: 0]"),
        ("--access-log", "[default: off]"),
        ("--admin-listen", "[default: off]"),
        ("--reuseport", "[default: off]"),
        ("--defer-accept", "[default: 0]"),
        ("--rcvbuf", "[default: 0]"),
        ("--sndbuf", "[default: 0]"),
        ("--coalesce", "[default: on]"),
        ("--read-until-wouldblock", "[default: off]"),
    ];
    for (flag, default) in flags {
        // A flag's entry runs from its line to the next line naming a flag.
        let entry: Vec<&str> = help
            .lines()
            .skip_while(|line| !line.contains(flag))
            .enumerate()
            .take_while(|(i, line)| *i == 0 || !line.contains("--"))
            .map(|(_, line)| line)
            .collect();
        assert!(!entry.is_empty(), "{flag} missing from --help:\n{help}");
        let entry = entry.join("\n");
        assert!(
            entry.contains(default),
            "{flag} does not show its default {default}:\n{help}"
        );
    }
}

/// The README's flag list is `--help`'s, line for line, so the documentation cannot drift.
#[test]
fn readme_lists_the_flags_as_help_prints_them() {
    let output = Command::new(env!("CARGO_BIN_EXE_miohttpd"))
        .arg("--help")
        .output()
        .expect("run miohttpd --help");
    let help = String::from_utf8_lossy(&output.stdout);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let listed: Vec<&str> = readme
        .split("`miohttpd --help` prints each with its default:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has the flag block")
        .lines()
        .collect();
    let printed: Vec<&str> = help.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(
        listed, printed,
        "README.md's flag block differs from --help"
    );
}

#[test]
fn version_prints_the_name_and_version() {
    for flag in ["--version", "-V"] {
        let output = Command::new(env!("CARGO_BIN_EXE_miohttpd"))
            .arg(flag)
            .output()
            .expect("run miohttpd --version");
        assert!(
            output.status.success(),
            "{flag} exited with {}",
            output.status
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("miohttpd {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// The address from a `miohttpd listening on http://ADDR` line.
fn listening_addr(line: &str) -> SocketAddr {
    line.strip_prefix("miohttpd listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
}

fn plaintext_at(addr: SocketAddr) -> u16 {
    let mut conn = Conn::connect(addr);
    conn.send(GET_PLAINTEXT);
    conn.read_response().status
}

fn ipv6_loopback_works() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn listen_may_be_given_more_than_once_and_one_loop_serves_all() {
    let server = Server::start_with(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"]);
    let second = listening_addr(&server.next_stdout_line());
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(second.ip().to_string(), "127.0.0.2");
    assert_eq!(
        second.port(),
        server.addr().port(),
        "port 0: one free port for all"
    );
    assert_eq!(plaintext_at(server.addr()), 200);
    assert_eq!(plaintext_at(second), 200);
}

#[test]
fn listen_on_a_port_alone_means_every_address() {
    let server = Server::start_with(&["--listen", ":0"]);
    assert_eq!(server.addr().ip().to_string(), "0.0.0.0");
    let port = server.addr().port();
    assert_eq!(plaintext_at(SocketAddr::from(([127, 0, 0, 1], port))), 200);
    if ipv6_loopback_works() {
        let v6 = listening_addr(&server.next_stdout_line());
        assert_eq!(v6, format!("[::]:{port}").parse().unwrap());
        assert_eq!(plaintext_at(format!("[::1]:{port}").parse().unwrap()), 200);
    }
}

#[test]
fn listen_takes_ipv6_and_names() {
    if ipv6_loopback_works() {
        let v6 = Server::start_with(&["--listen", "[::1]:0"]);
        assert_eq!(v6.addr().ip().to_string(), "::1");
        assert_eq!(plaintext_at(v6.addr()), 200);
    }
    // localhost resolves to 127.0.0.1 and, with IPv6, ::1: a listener on each, one port.
    let named = Server::start_with(&["--listen", "localhost:0"]);
    assert!(named.addr().ip().is_loopback(), "{}", named.addr());
    assert_eq!(plaintext_at(named.addr()), 200);
    let resolved = std::net::ToSocketAddrs::to_socket_addrs("localhost:1")
        .unwrap()
        .count();
    for _ in 1..resolved {
        let other = listening_addr(&named.next_stdout_line());
        assert_eq!(other.port(), named.addr().port());
        assert_eq!(plaintext_at(other), 200);
    }
}

#[test]
fn bad_listen_values_are_usage_errors() {
    for value in [
        "no-such-host.invalid:8080",
        "localhost:99999",
        "localhost",
        "127.0.0.1:http",
        "[::1:8080",
        ":",
        "",
    ] {
        let (code, stderr) = exit_without_serving(&["--listen", value], &[]);
        assert_eq!(code, Some(2), "--listen {value:?}: {stderr}");
        assert!(stderr.contains("--listen"), "--listen {value:?}: {stderr}");
    }
}

/// RFC 9112 §3: a recipient SHOULD support request-lines of at least 8000 octets; a
/// 7,901-byte target once got 414.
#[test]
fn an_8000_byte_target_is_served_by_default() {
    let server = Server::start();
    let request = |target_len: usize| {
        let target = format!(
            "/plaintext?{}",
            "q".repeat(target_len - "/plaintext?".len())
        );
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
    };
    for len in [7_901, 8_000] {
        let response = server.request(request(len).as_bytes());
        assert_eq!(response.status, 200, "{len}-byte target");
    }
    let mut conn = server.connect();
    conn.send(request(8_001).as_bytes());
    assert_eq!(conn.read_response().status, 414, "over the limit");
    server.assert_still_serves();
}

#[test]
fn a_refused_bare_number_says_what_to_write() {
    let (code, stderr) = exit_without_serving(&["--exec-kill-grace", "300"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("300ms"), "{stderr}");
}
