//! Fuzz target `connection`: one connection of the real server (builtin routes, default
//! config, fixed Date) fed arbitrary bytes, once whole and once cut into reads. Neither run
//! may panic or hang (serve_chunks bounds its turns; libFuzzer's -timeout catches the rest),
//! each output must read as a sequence of HTTP/1.1 responses, and the two must be the same
//! once normalised for what may legitimately depend on the reads (see `normalise`).
//!
//! Input: payload, then one control byte: how to cut the payload into reads (see `cut`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use miohttpd::fuzzing::serve_chunks;
use miohttpd_fuzz::{cut, head_methods, normalise, parse_responses, take_controls};

fuzz_target!(|data: &[u8]| {
    let Some(([cut_control], payload)) = take_controls::<1>(data) else {
        return;
    };
    let heads = head_methods(payload);
    let answers_head = |i: usize| heads.get(i).copied().unwrap_or(false);
    let read = |out: &[u8], how: &str| {
        parse_responses(out, answers_head).unwrap_or_else(|e| {
            panic!(
                "{how} output is not HTTP/1.1: {e}\n{}",
                String::from_utf8_lossy(out)
            )
        })
    };
    let whole = read(&serve_chunks(&[payload]), "whole");
    let split = read(&serve_chunks(&cut(payload, cut_control, false)), "split");
    assert!(
        whole.iter().filter(|r| r.status >= 200).count() <= heads.len() + 1,
        "more answers than requests"
    );
    assert_eq!(
        normalise(split),
        normalise(whole),
        "split and whole runs answered differently"
    );
});
