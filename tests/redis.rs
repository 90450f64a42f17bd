//! The Redis side of comet across hosts, against a real `redis-server` each test starts on an
//! ephemeral loopback port: the publish, catch-up and heartbeat scripts of
//! `miohttpd::redis::scripts`, run exactly as the link encodes them.

mod common;

use common::redis::{Client, Redis};
use miohttpd::redis::resp::Value;
use miohttpd::redis::scripts::{
    encode_heartbeat, encode_history, encode_publish, parse_bus_message, parse_history,
    parse_published, History, Invoke, KeySpace, PublishParams, Published, Script,
};

fn params(host: &str, history: usize) -> PublishParams {
    PublishParams {
        history,
        host: host.into(),
        key_ttl_ms: 0,
    }
}

fn send(client: &mut Client, encode: impl FnOnce(&mut Vec<u8>)) -> Value {
    let mut out = Vec::new();
    encode(&mut out);
    // The encoded command goes out as is: decode it into arguments for the client.
    let mut decoder = miohttpd::redis::resp::Decoder::new(Default::default());
    decoder.feed(&out);
    let Some(Value::Array(items)) = decoder.next().unwrap() else {
        panic!("a command is an array")
    };
    let args: Vec<&[u8]> = items.iter().map(|v| v.as_bytes().unwrap()).collect();
    client.command(&args)
}

fn publish(
    client: &mut Client,
    keys: &KeySpace,
    host: &str,
    history: usize,
    channel: &str,
    body: &[u8],
) -> Published {
    let reply = send(client, |out| {
        encode_publish(
            out,
            Invoke::Source,
            keys,
            &params(host, history),
            channel,
            "text/plain",
            body,
            None,
        )
    });
    parse_published(&reply).unwrap_or_else(|e| panic!("{e:?}: {reply:?}"))
}

fn history(
    client: &mut Client,
    keys: &KeySpace,
    channel: &str,
    after: Option<(u32, u64)>,
) -> History {
    let reply = send(client, |out| {
        encode_history(out, Invoke::Source, keys, channel, after, None)
    });
    parse_history(&reply).unwrap_or_else(|e| panic!("{e:?}: {reply:?}"))
}

#[test]
fn publish_gives_one_sequence_per_channel_and_keeps_the_last_n_in_the_stream() {
    let redis = Redis::start();
    let mut client = redis.client();
    let keys = KeySpace::new("t");

    let first = publish(&mut client, &keys, "a", 3, "news", b"one");
    assert!(first.fresh);
    assert_eq!(first.seq, 1);
    // Another host publishing on the same channel continues the same sequence and epoch.
    for (seq, body) in [(2, "two"), (3, "three"), (4, "four")] {
        let next = publish(&mut client, &keys, "b", 3, "news", body.as_bytes());
        assert_eq!(
            (next.epoch, next.seq, next.fresh),
            (first.epoch, seq, false)
        );
    }
    // Channels count on their own.
    assert_eq!(publish(&mut client, &keys, "a", 3, "other", b"x").seq, 1);

    let all = history(&mut client, &keys, "news", None);
    assert_eq!((all.epoch, all.last_seq), (Some(first.epoch), 4));
    let bodies: Vec<&[u8]> = all.entries.iter().map(|e| e.body.as_slice()).collect();
    assert!(all.entries.iter().all(|e| e.content_type == "text/plain"));
    assert_eq!(bodies, [&b"two"[..], b"three", b"four"], "trimmed to 3");
    assert!(all.entries.iter().all(|e| e.epoch == first.epoch));

    let after = history(&mut client, &keys, "news", Some((first.epoch, 3)));
    assert_eq!(after.entries.len(), 1);
    assert_eq!(
        (after.entries[0].seq, after.entries[0].body.as_slice()),
        (4, &b"four"[..])
    );
    assert!(history(&mut client, &keys, "news", Some((first.epoch, 4)))
        .entries
        .is_empty());
    // An id of another epoch gets everything there is, and the epoch to compare with.
    let other = history(
        &mut client,
        &keys,
        "news",
        Some((first.epoch.wrapping_add(1), 1)),
    );
    assert_eq!(other.entries.len(), 3);
    assert_eq!(history(&mut client, &keys, "missing", None).epoch, None);
}

#[test]
fn a_channel_redis_lost_comes_back_with_a_new_epoch() {
    let redis = Redis::start();
    let mut client = redis.client();
    let keys = KeySpace::new("t");
    let before = publish(&mut client, &keys, "a", 8, "c", b"1");
    publish(&mut client, &keys, "a", 8, "c", b"2");
    // Redis forgets (a restart without its data, a failover to a replica that had none).
    assert_eq!(client.cmd(&["FLUSHALL"]), Value::Simple(b"OK".to_vec()));
    std::thread::sleep(std::time::Duration::from_millis(2)); // the epoch is Redis time in ms
    let after = publish(&mut client, &keys, "a", 8, "c", b"3");
    assert!(after.fresh);
    assert_eq!(after.seq, 1);
    assert_ne!(after.epoch, before.epoch);
    let h = history(&mut client, &keys, "c", Some((before.epoch, 2)));
    assert_eq!(
        h.epoch,
        Some(after.epoch),
        "the caller sees the epoch changed: resync"
    );
    assert_eq!(h.entries.len(), 1);
}

#[test]
fn every_publish_goes_out_on_the_bus_with_its_id() {
    let redis = Redis::start();
    let keys = KeySpace::new("t");
    let mut subscriber = redis.client();
    let reply = subscriber.cmd(&["SUBSCRIBE", &keys.bus()]);
    assert!(matches!(reply, Value::Array(ref v) if v[0] == Value::Bulk(b"subscribe".to_vec())));

    let mut client = redis.client();
    let published = publish(&mut client, &keys, "host-a", 4, "room", b"hello\nworld");
    let Value::Array(message) = subscriber.read() else {
        panic!("a pub/sub message is an array")
    };
    assert_eq!(message[0], Value::Bulk(b"message".to_vec()));
    assert_eq!(message[1], Value::Bulk(keys.bus().into_bytes()));
    let payload = message[2].as_bytes().unwrap();
    let bus = parse_bus_message(payload).expect("a bus message");
    assert_eq!(
        (
            bus.origin,
            bus.channel,
            bus.epoch,
            bus.seq,
            bus.content_type,
            bus.body
        ),
        (
            "host-a",
            "room",
            published.epoch,
            published.seq,
            "text/plain",
            &b"hello\nworld"[..]
        )
    );
}

#[test]
fn a_fenced_read_publishes_its_fence_after_every_message_published_before_it() {
    let redis = Redis::start();
    let keys = KeySpace::new("t");
    let mut subscriber = redis.client();
    subscriber.cmd(&["SUBSCRIBE", &keys.bus()]);
    subscriber.cmd(&["SUBSCRIBE", &keys.host_channel("me")]);
    let mut client = redis.client();
    publish(&mut client, &keys, "host-a", 4, "room", b"one");
    let fence_to = keys.host_channel("me");
    let reply = send(&mut client, |out| {
        let fence = Some((fence_to.as_str(), &b"fence 7"[..]));
        encode_history(out, Invoke::Source, &keys, "room", None, fence)
    });
    let read = parse_history(&reply).unwrap();
    assert_eq!(read.entries.len(), 1);
    // On the subscriber connection: the message, then the fence, in the order they ran.
    let payload = |v: Value| match v {
        Value::Array(items) => items[2].as_bytes().unwrap().to_vec(),
        other => panic!("{other:?}"),
    };
    assert!(parse_bus_message(&payload(subscriber.read())).is_some());
    assert_eq!(payload(subscriber.read()), b"fence 7");
}

#[test]
fn heartbeats_count_live_hosts_and_publishes_report_them() {
    let redis = Redis::start();
    let mut client = redis.client();
    let keys = KeySpace::new("t");
    let beat = |client: &mut Client, host: &str, ttl: u64| {
        send(client, |out| {
            encode_heartbeat(out, Invoke::Source, &keys, host, ttl)
        })
        .as_integer()
    };
    assert_eq!(beat(&mut client, "a", 60_000), Some(1));
    assert_eq!(beat(&mut client, "b", 60_000), Some(2));
    assert_eq!(
        beat(&mut client, "a", 60_000),
        Some(2),
        "a host counts once"
    );
    assert_eq!(beat(&mut client, "c", 1), Some(3));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        publish(&mut client, &keys, "a", 4, "c", b"x").hosts,
        2,
        "c expired"
    );
    assert_eq!(beat(&mut client, "a", 60_000), Some(2), "and is dropped");
}

#[test]
fn scripts_load_by_sha_and_a_flushed_cache_says_noscript() {
    let redis = Redis::start();
    let mut client = redis.client();
    let keys = KeySpace::new("t");
    let sha = client.command(&[b"SCRIPT", b"LOAD", Script::Publish.source().as_bytes()]);
    let sha = sha.as_bytes().expect("a sha").to_vec();
    let reply = send(&mut client, |out| {
        encode_publish(
            out,
            Invoke::Sha(&sha),
            &keys,
            &params("a", 4),
            "c",
            "text/plain",
            b"x",
            None,
        )
    });
    assert_eq!(parse_published(&reply).map(|p| p.seq), Ok(1));
    client.cmd(&["SCRIPT", "FLUSH"]);
    let reply = send(&mut client, |out| {
        encode_publish(
            out,
            Invoke::Sha(&sha),
            &keys,
            &params("a", 4),
            "c",
            "text/plain",
            b"x",
            None,
        )
    });
    assert!(
        matches!(&reply, Value::Error(e) if e.starts_with(b"NOSCRIPT")),
        "{reply:?}"
    );
}

#[test]
fn the_password_is_read_from_the_environment_and_never_printed() {
    let run = |env: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_miohttpd"));
        command.args(args).env_remove("MIOHTTPD_REDIS_PASSWORD");
        if let Some(value) = env {
            command.env("MIOHTTPD_REDIS_PASSWORD", value);
        }
        let output = command.output().expect("run miohttpd");
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        (output.status.code(), text)
    };
    // Read only with --redis, and refused when it is not a password.
    let (code, text) = run(Some("two words"), &["--redis", "redis://127.0.0.1:1"]);
    assert_eq!(code, Some(2));
    assert!(text.contains("$MIOHTTPD_REDIS_PASSWORD"), "{text}");
    assert!(!text.contains("two words"), "{text}");
    // Taken: the server runs (Redis unreachable: it serves what is local and retries), and
    // the password is in no line it writes.
    let server = common::Server::launch(
        &["--redis", "redis://127.0.0.1:1"],
        common::Launch {
            env: &[("MIOHTTPD_REDIS_PASSWORD", "s3cret")],
            open_files: None,
        },
    );
    server.assert_still_serves();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = server.stderr();
    assert!(text.contains("redis"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let (_, help) = run(
        Some("s3cret"),
        &["--redis", "redis://:urlpw@127.0.0.1:1", "--help"],
    );
    assert!(
        !help.contains("s3cret") && !help.contains("urlpw"),
        "{help}"
    );
}
