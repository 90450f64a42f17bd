//! Fuzz target `body`: `BodyDecoder` (Content-Length and chunked) fed arbitrary bytes in
//! arbitrary pieces must yield the same data and the same end (done where, or the same error)
//! as one feed of the whole input, never consume more than it was given, hand out data only
//! from what it consumed, and agree with a plain reference decoder.
//!
//! Input: payload, then two control bytes: the framing (even: `Length(byte / 2)`, 0xfe
//! `Length(u64::MAX)`; odd: chunked with a trailer limit of `byte / 2 * 8`), then how to cut
//! the payload into reads (see `cut`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use miohttpd::http::{BodyDecoder, ChunkError, Framing};
use miohttpd_fuzz::{cut, reference_chunked, take_controls, Outcome};

fuzz_target!(|data: &[u8]| {
    let Some(([framing_control, cut_control], payload)) = take_controls::<2>(data) else {
        return;
    };
    let (framing, max_trailer_size) = match framing_control {
        0xfe => (Framing::Length(u64::MAX), 0),
        even if even % 2 == 0 => (Framing::Length(u64::from(even / 2)), 0),
        odd => (Framing::Chunked, usize::from(odd / 2) * 8),
    };
    let whole = feed(framing, max_trailer_size, &[payload]);
    let split = feed(framing, max_trailer_size, &cut(payload, cut_control, true));
    assert_eq!(split, whole, "split feed differs from the whole feed");

    let (data, end) = whole;
    let reference = match framing {
        Framing::Length(length) => match usize::try_from(length) {
            Ok(n) if n <= payload.len() => (payload[..n].to_vec(), Outcome::Done { consumed: n }),
            _ => (payload.to_vec(), Outcome::NeedMore),
        },
        Framing::Chunked => reference_chunked(payload, max_trailer_size),
    };
    let outcome = match end {
        End::Done { consumed } => Outcome::Done { consumed },
        End::NeedMore { consumed } => {
            assert_eq!(consumed, payload.len(), "bytes left unconsumed mid-body");
            Outcome::NeedMore
        }
        End::Failed(_) => Outcome::Invalid,
    };
    if outcome == Outcome::Invalid {
        // The data before the error is not compared: the reference stops at the first
        // invalid byte, while the decoder may already have handed out the chunk before it.
        assert_eq!(
            reference.1,
            Outcome::Invalid,
            "decoder refused what the reference accepts"
        );
    } else {
        assert_eq!((data, outcome), reference, "decoder and reference disagree");
    }
});

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Done { consumed: usize },
    NeedMore { consumed: usize },
    Failed(ChunkError),
}

/// Feeds the pieces as a connection does: appended to what is pending, decoded until the
/// body is done or nothing more is consumed. Returns the data and how it ended.
fn feed(framing: Framing, max_trailer_size: usize, pieces: &[&[u8]]) -> (Vec<u8>, End) {
    let mut decoder = BodyDecoder::new(framing, max_trailer_size);
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    // The connection decodes once as soon as the head is in, before any body byte.
    for piece in std::iter::once(&[][..]).chain(pieces.iter().copied()) {
        pending.extend_from_slice(piece);
        loop {
            let step = match decoder.decode(&pending) {
                Ok(step) => step,
                Err(e) => return (data, End::Failed(e)),
            };
            assert!(step.consumed <= pending.len(), "consumed more than given");
            let start = pending.as_ptr() as usize;
            let at = step.data.as_ptr() as usize;
            assert!(
                step.data.is_empty()
                    || (at >= start && at + step.data.len() <= start + step.consumed),
                "data not from the consumed input"
            );
            data.extend_from_slice(step.data);
            let (consumed, done) = (step.consumed, step.done);
            pending.drain(..consumed);
            consumed_total += consumed;
            if let (Framing::Length(n), Some(left)) = (framing, decoder.remaining()) {
                assert_eq!(left + consumed_total as u64, n, "Length bookkeeping");
            }
            if done {
                assert!(decoder.is_done());
                // A finished decoder takes nothing more: the rest is the next request.
                let again = decoder.decode(&pending).expect("done stays done");
                assert_eq!((again.consumed, again.data, again.done), (0, &[][..], true));
                return (
                    data,
                    End::Done {
                        consumed: consumed_total,
                    },
                );
            }
            assert!(!decoder.is_done());
            if consumed == 0 {
                break;
            }
        }
    }
    (
        data,
        End::NeedMore {
            consumed: consumed_total,
        },
    )
}
