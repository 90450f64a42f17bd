//! The worker bus's frame decoder over arbitrary bytes, cut where the input's last byte says:
//! it never panics, where reads end never changes the frames or the error, and every frame
//! it accepts re-encodes to exactly the bytes it came from (one encoding per frame).
#![no_main]

use libfuzzer_sys::fuzz_target;
use miohttpd::bus::{decode, encode, FrameReader};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_last() else {
        return;
    };
    // Whole input at once: the reference outcome.
    let mut whole = Vec::new();
    let mut at = 0;
    let whole_error = loop {
        match decode(&stream[at..]) {
            Ok(Some((frame, used))) => {
                let mut again = Vec::new();
                encode(&frame, &mut again).expect("a decoded frame encodes");
                assert_eq!(again, &stream[at..at + used], "one encoding per frame");
                whole.push(format!("{frame:?}"));
                at += used;
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    // The same bytes in reads of `cut + 1` bytes.
    let step = cut as usize + 1;
    let mut reader = FrameReader::new();
    let mut pieces = Vec::new();
    let mut piece_error = None;
    'reads: for chunk in stream.chunks(step) {
        let spare = reader.spare(chunk.len());
        spare.copy_from_slice(chunk);
        let n = chunk.len();
        reader.filled(n, n);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => pieces.push(format!("{frame:?}")),
                Ok(None) => break,
                Err(e) => {
                    piece_error = Some(e);
                    break 'reads;
                }
            }
        }
    }
    assert_eq!(pieces, whole);
    assert_eq!(piece_error, whole_error);
});
