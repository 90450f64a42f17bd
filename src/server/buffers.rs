//! Read and write buffers, and the pool that lends them to connections only while they have
//! bytes in flight, so an idle keep-alive connection holds no buffer at all.

use std::rc::Rc;

/// A fixed-size read buffer with a window of unconsumed bytes.
#[derive(Debug)]
pub struct InputBuffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    pub fn new(size: usize) -> Self {
        InputBuffer {
            bytes: vec![0; size].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Room left for reads without moving bytes.
    pub fn free_space(&self) -> usize {
        self.bytes.len() - (self.end - self.start)
    }

    /// Copies the unconsumed bytes of `other` in (after a buffer swap).
    pub fn extend_from(&mut self, other: &InputBuffer) {
        let data = other.data();
        let spare = self.spare();
        spare[..data.len()].copy_from_slice(data);
        self.filled(data.len());
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn consume_all(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Room to read into, after moving unconsumed bytes to the front if the tail is full.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.bytes.len() && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.bytes[self.end..]
    }

    /// Marks `n` bytes of [`InputBuffer::spare`] as read.
    pub fn filled(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.bytes.len());
        self.end += n;
    }
}

/// Pending response bytes: first an optional segment shared with other connections (a
/// notify's answer, rendered once for all its waiters), then the connection's own bytes,
/// appended at the end and written from `sent`.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    shared: Option<(Rc<[u8]>, usize)>,
    pub bytes: Vec<u8>,
    pub sent: usize,
}

impl OutputBuffer {
    pub fn pending_len(&self) -> usize {
        let shared = self.shared.as_ref().map_or(0, |(s, at)| s.len() - at);
        shared + self.bytes.len() - self.sent
    }

    /// The pending bytes as at most two slices, in the order they must be sent.
    pub fn pending(&self) -> [&[u8]; 2] {
        let shared = self.shared.as_ref().map_or(&[][..], |(s, at)| &s[*at..]);
        [shared, &self.bytes[self.sent..]]
    }

    /// Queues bytes shared with other connections. Held by reference when nothing else is
    /// pending (the usual case: a parked waiter); copied behind what is, to keep the order.
    pub fn push_shared(&mut self, shared: &Rc<[u8]>) {
        if self.pending_len() == 0 {
            self.shared = Some((Rc::clone(shared), 0));
        } else {
            self.bytes.extend_from_slice(shared);
        }
    }

    pub fn advance(&mut self, mut n: usize) {
        if let Some((shared, at)) = &mut self.shared {
            let taken = n.min(shared.len() - *at);
            *at += taken;
            n -= taken;
            if *at == shared.len() {
                self.shared = None;
            }
        }
        self.sent += n;
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
        }
    }

    /// Drops already-sent bytes from the front once they outweigh what is left, so a slow
    /// reader's buffer stays near the high-water mark instead of growing with every response.
    pub fn compact(&mut self) {
        let own_pending = self.bytes.len() - self.sent;
        if self.sent > 0 && self.sent >= own_pending {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
    }
}

/// Free buffers, lent to connections while they have bytes in flight. Input buffers come
/// in two sizes: head buffers for requests, body buffers for large bodies streaming in.
#[derive(Debug)]
pub struct BufferPool {
    head_size: usize,
    body_size: usize,
    free_heads: Vec<InputBuffer>,
    free_bodies: Vec<InputBuffer>,
    free_outputs: Vec<Vec<u8>>,
    /// An output buffer that grew past this (a large response) is freed, not pooled.
    max_pooled_output: usize,
    /// Where a stream's pipe reads land before they are framed into its output: one for the
    /// loop, kept so that a read does not zero a fresh one first.
    pipe_read: Option<Box<[u8]>>,
}

/// Free buffers kept for reuse. In one loop only the connections with bytes buffered at the
/// same instant hold one, so a small pool removes nearly all allocation without hoarding.
const MAX_FREE_BUFFERS: usize = 64;
/// Body buffers are large; a lent one comes back within the same turn.
const MAX_FREE_BODY_BUFFERS: usize = 2;

/// Which kind of input buffer a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Head,
    Body,
}

impl BufferPool {
    pub fn new(head_size: usize, body_size: usize, max_pooled_output: usize) -> Self {
        BufferPool {
            head_size,
            body_size: body_size.max(head_size),
            free_heads: Vec::with_capacity(MAX_FREE_BUFFERS),
            free_bodies: Vec::with_capacity(MAX_FREE_BODY_BUFFERS),
            free_outputs: Vec::with_capacity(MAX_FREE_BUFFERS),
            max_pooled_output,
            pipe_read: None,
        }
    }

    pub fn head_size(&self) -> usize {
        self.head_size
    }

    pub fn take_input(&mut self, kind: InputKind) -> InputBuffer {
        let (free, size) = match kind {
            InputKind::Head => (&mut self.free_heads, self.head_size),
            InputKind::Body => (&mut self.free_bodies, self.body_size),
        };
        free.pop().unwrap_or_else(|| InputBuffer::new(size))
    }

    pub fn give_input(&mut self, mut buffer: InputBuffer) {
        let (free, cap) = if buffer.capacity() == self.head_size {
            (&mut self.free_heads, MAX_FREE_BUFFERS)
        } else {
            (&mut self.free_bodies, MAX_FREE_BODY_BUFFERS)
        };
        if free.len() < cap {
            buffer.consume_all();
            free.push(buffer);
        }
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        self.free_outputs.pop().unwrap_or_default()
    }

    pub fn take_pipe_read(&mut self, size: usize) -> Box<[u8]> {
        self.pipe_read
            .take()
            .unwrap_or_else(|| vec![0; size].into_boxed_slice())
    }

    pub fn give_pipe_read(&mut self, buffer: Box<[u8]>) {
        self.pipe_read = Some(buffer);
    }

    pub fn give_output(&mut self, mut buffer: Vec<u8>) {
        if self.free_outputs.len() < MAX_FREE_BUFFERS && buffer.capacity() <= self.max_pooled_output
        {
            buffer.clear();
            self.free_outputs.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_window_compacts_only_when_the_tail_is_full() {
        let mut input = InputBuffer::new(8);
        input.spare()[..6].copy_from_slice(b"abcdef");
        input.filled(6);
        input.consume(4);
        assert_eq!(input.data(), b"ef");
        assert_eq!(input.spare().len(), 2, "tail not full: no move yet");
        input.spare()[..2].copy_from_slice(b"gh");
        input.filled(2);
        assert_eq!(
            input.spare().len(),
            4,
            "full tail: unconsumed bytes moved to the front"
        );
        assert_eq!(input.data(), b"efgh");
        input.consume(4);
        assert!(input.is_empty());
        assert_eq!(input.spare().len(), 8);
    }

    #[test]
    fn moving_bytes_to_a_larger_buffer() {
        let mut small = InputBuffer::new(8);
        small.spare()[..5].copy_from_slice(b"abcde");
        small.filled(5);
        small.consume(2);
        let mut large = InputBuffer::new(32);
        large.extend_from(&small);
        assert_eq!(large.data(), b"cde");
        assert_eq!(large.free_space(), 29);
    }

    #[test]
    fn output_compaction_bounds_sent_bytes() {
        let mut out = OutputBuffer::default();
        out.bytes.extend_from_slice(b"0123456789");
        out.advance(3);
        out.compact();
        assert_eq!(
            (out.sent, out.pending()[1]),
            (3, &b"3456789"[..]),
            "little sent: keep"
        );
        out.advance(5);
        out.compact();
        assert_eq!((out.sent, out.pending()[1]), (0, &b"89"[..]));
        out.advance(2);
        assert_eq!(out.bytes.len(), 0);
    }

    #[test]
    fn shared_bytes_are_held_not_copied_and_keep_their_order() {
        let notify: Rc<[u8]> = Rc::from(&b"SHARED"[..]);
        let mut idle = OutputBuffer::default();
        idle.push_shared(&notify);
        assert_eq!(Rc::strong_count(&notify), 2, "held by reference");
        idle.bytes.extend_from_slice(b"own");
        assert_eq!(idle.pending(), [&b"SHARED"[..], &b"own"[..]]);
        idle.advance(4);
        assert_eq!(idle.pending(), [&b"ED"[..], &b"own"[..]]);
        idle.advance(3);
        assert_eq!(idle.pending(), [&b""[..], &b"wn"[..]]);
        assert_eq!(Rc::strong_count(&notify), 1, "released once sent");

        let mut busy = OutputBuffer::default();
        busy.bytes.extend_from_slice(b"first");
        busy.push_shared(&notify);
        assert_eq!(Rc::strong_count(&notify), 1, "copied behind pending bytes");
        assert_eq!(busy.pending(), [&b""[..], &b"firstSHARED"[..]]);
        assert_eq!(busy.pending_len(), 11);
    }

    #[test]
    fn pool_reuses_and_bounds() {
        let mut pool = BufferPool::new(16, 256, 64);
        let mut input = pool.take_input(InputKind::Head);
        input.filled(3);
        pool.give_input(input);
        let again = pool.take_input(InputKind::Head);
        assert!(again.is_empty(), "pooled buffers come back empty");
        assert_eq!(again.capacity(), 16);
        let body = pool.take_input(InputKind::Body);
        assert_eq!(body.capacity(), 256);
        pool.give_input(body);
        assert_eq!(pool.free_bodies.len(), 1, "returned to its own size class");
        assert_eq!(pool.free_heads.len(), 0);
        let big = Vec::with_capacity(1024);
        pool.give_output(big);
        assert_eq!(
            pool.take_output().capacity(),
            0,
            "oversized output not pooled"
        );
    }
}
