//! Fuzz target `connection`: one connection of the real server (builtin routes, a fixed Date)
//! fed arbitrary bytes three ways: whole, cut into reads, and cut into reads with the clock,
//! the client's reading, publishes from other clients and the server's shutdown interleaved
//! as the input chooses. None may
//! panic or hang (the driver bounds its turns and its timer firings; libFuzzer's -timeout
//! catches the rest), each output must read as a sequence of HTTP/1.1 responses, the whole
//! and split runs must be the same once normalised for what may legitimately depend on the
//! reads (see `normalise`), and the timed run must have closed the connection by an hour after
//! its client's FIN, with nothing written after the close.
//!
//! Input: payload, then two control bytes: what happens between reads in the timed run (see
//! `timed_script`; 0 skips that run), and how to cut the payload into reads (see `cut`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use miohttpd::fuzzing::{serve_chunks, Driver};
use miohttpd_fuzz::{
    channel_named, cut, head_methods, normalise, parse_responses, parse_responses_with,
    take_controls, timed_config, timed_script, Action, Ending,
};

fuzz_target!(|data: &[u8]| {
    let Some(([time_control, cut_control], payload)) = take_controls::<2>(data) else {
        return;
    };
    let heads = head_methods(payload);
    let answers_head = |i: usize| heads.get(i).copied().unwrap_or(false);
    let fail = |out: &[u8], how: &str, e: String| -> ! {
        panic!(
            "{how} output is not HTTP/1.1: {e}\n{}",
            String::from_utf8_lossy(out)
        )
    };
    let read = |out: &[u8], how: &str| {
        parse_responses(out, answers_head).unwrap_or_else(|e| fail(out, how, e))
    };
    let pieces = cut(payload, cut_control, false);
    let whole = read(&serve_chunks(&[payload]), "whole");
    let split = read(&serve_chunks(&pieces), "split");
    assert!(
        whole.iter().filter(|r| r.status >= 200).count() <= heads.len() + 1,
        "more answers than requests"
    );
    assert_eq!(
        normalise(split),
        normalise(whole),
        "split and whole runs answered differently"
    );

    if time_control == 0 {
        return;
    }
    let config = timed_config();
    let script = timed_script(&pieces, time_control, &config);
    let mut driver = Driver::new(config);
    let client = driver.connect();
    let mut publish = b"POST /notify/".to_vec();
    publish.extend_from_slice(channel_named(payload));
    publish.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    let mut publishers = Vec::new();
    for action in script {
        match action {
            Action::Client(step) => driver.step(client, step),
            Action::Publish => {
                let publisher = driver.connect();
                driver.send(publisher, &publish);
                driver.shutdown_write(publisher);
                publishers.push(publisher);
            }
        }
    }
    for publisher in publishers {
        let out = driver.trace(publisher).output();
        let answers =
            parse_responses(&out, |_| false).unwrap_or_else(|e| fail(&out, "publisher", e));
        assert!(answers.len() <= 1, "{answers:?}");
        assert!(!driver.is_open(publisher), "a publisher outlived its FIN");
    }
    let trace = driver.trace(client);
    let out = trace.output();
    // A 408 answers no request: it has a body even where a HEAD was on its way. Only a
    // connection dropped while its client took nothing may end inside a response.
    let ending = if trace.cut_off {
        Ending::MayBeCutOff
    } else {
        Ending::Whole
    };
    let answers = |i, status| status != 408 && answers_head(i);
    let timed =
        parse_responses_with(&out, answers, ending).unwrap_or_else(|e| fail(&out, "timed", e));
    assert!(
        timed.iter().filter(|r| r.status >= 200).count() <= heads.len() + 1,
        "more answers than requests in the timed run"
    );
    let Some(closed_at) = trace.closed_at else {
        panic!("the connection outlived its client's FIN by an hour: {trace:?}");
    };
    assert!(
        trace.last_write_at().is_none_or(|at| at <= closed_at),
        "written after the close: {trace:?}"
    );
});
