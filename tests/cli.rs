//! The command line: `--help` lists every flag with its default and exits 0.

use std::process::Command;

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
        ("--max-target-size", "4096"),
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
