//! The connection table: a slab whose keys carry a generation in their mio token, so an event
//! still queued for a closed connection can never reach the connection that reuses its slot.

use mio::Token;
use slab::Slab;

/// Low bits of a token: the slab key. High bits: the generation of the slot's occupant.
const KEY_BITS: u32 = usize::BITS / 2;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
/// The highest keys are never used, so no connection (or pipe) token can equal the tokens
/// of the loop's own sources below.
const MAX_KEYS: usize = KEY_MASK - 7;

/// The key of every listening socket's token: one the table never hands out (like
/// [`ADMIN`]'s), with the listener's index where a connection's generation would be.
const LISTENER_KEY: usize = MAX_KEYS + 1;
/// Most `--listen` listeners: their indices fit a 64-bit mask of pending accepts.
pub const MAX_LISTENERS: usize = 64;
/// The token of the signal pipe (SIGTERM, SIGINT).
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// The token of a worker's bus link (`--workers N`): its key is above every key the table
/// hands out and is no listener's, so no connection, pipe or listener token can equal it.
pub const BUS: Token = Token(usize::MAX - 2);
/// The token of the admin listener (`--admin-listen`): a key the table never hands out,
/// with generation 0 and no pipe flag, so neither a connection nor a pipe can have it.
pub const ADMIN: Token = Token(MAX_KEYS);
/// Set in the token of a connection's child stdout pipe; connection tokens never have it.
const PIPE_FLAG: usize = 1 << (usize::BITS - 1);
/// Generations use the bits above the key, less the pipe flag.
const GENERATION_MASK: usize = usize::MAX >> (KEY_BITS + 1);

/// The token listener `index` is registered with.
pub fn listener_token(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(index << KEY_BITS | LISTENER_KEY)
}

/// Which listener a token belongs to, if it is a listener's.
pub fn listener_index(token: Token) -> Option<usize> {
    (token.0 & KEY_MASK == LISTENER_KEY && token.0 & PIPE_FLAG == 0).then_some(token.0 >> KEY_BITS)
}

/// The token a connection's child pipe is registered with.
pub fn pipe_token(conn: Token) -> Token {
    Token(conn.0 | PIPE_FLAG)
}

/// The connection a pipe token belongs to, if it is a pipe token.
pub fn pipe_owner(token: Token) -> Option<Token> {
    (token.0 & PIPE_FLAG != 0 && token.0 & KEY_MASK < MAX_KEYS)
        .then_some(Token(token.0 & !PIPE_FLAG))
}

#[derive(Debug)]
pub struct ConnTable<T> {
    slots: Slab<Slot<T>>,
    next_generation: usize,
}

#[derive(Debug)]
struct Slot<T> {
    generation: usize,
    value: T,
}

impl<T> ConnTable<T> {
    pub fn new() -> Self {
        ConnTable {
            slots: Slab::new(),
            next_generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every live connection's token.
    pub fn tokens(&self) -> Vec<Token> {
        let tokens = self.slots.iter();
        tokens
            .map(|(key, slot)| Token(slot.generation << KEY_BITS | key))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Stores a value under a fresh token; the value back when the table is full.
    pub fn insert(&mut self, value: T) -> Result<Token, T> {
        let entry = self.slots.vacant_entry();
        if entry.key() >= MAX_KEYS {
            return Err(value);
        }
        let generation = self.next_generation & GENERATION_MASK;
        self.next_generation = self.next_generation.wrapping_add(1);
        let token = Token(generation << KEY_BITS | entry.key());
        entry.insert(Slot { generation, value });
        Ok(token)
    }

    /// The value for a token, unless that token's connection is gone.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (key, generation) = split(token);
        match self.slots.get_mut(key) {
            Some(slot) if slot.generation == generation => Some(&mut slot.value),
            _ => None,
        }
    }

    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (key, generation) = split(token);
        match self.slots.get(key) {
            Some(slot) if slot.generation == generation => Some(self.slots.remove(key).value),
            _ => None,
        }
    }
}

fn split(token: Token) -> (usize, usize) {
    (token.0 & KEY_MASK, token.0 >> KEY_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_token_cannot_reach_the_slot_reused_after_it() {
        let mut table = ConnTable::new();
        let old = table.insert("old").unwrap();
        assert_eq!(table.remove(old), Some("old"));
        let new = table.insert("new").unwrap();
        assert_eq!(split(old).0, split(new).0, "the slab key is reused");
        assert_ne!(old, new, "but the token differs");
        assert_eq!(table.get_mut(old), None);
        assert_eq!(table.remove(old), None);
        assert_eq!(table.get_mut(new), Some(&mut "new"));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn pipe_tokens_map_back_to_their_connection() {
        let mut table = ConnTable::new();
        table.next_generation = GENERATION_MASK; // the largest generation
        let token = table.insert(()).unwrap();
        assert_eq!(token.0 & PIPE_FLAG, 0);
        assert_eq!(pipe_owner(pipe_token(token)), Some(token));
        assert_eq!(pipe_owner(token), None);
        assert_eq!(pipe_owner(listener_token(0)), None);
        assert_eq!(pipe_owner(listener_token(MAX_LISTENERS - 1)), None);
        assert_eq!(pipe_owner(SIGNALS), None);
        assert_eq!(pipe_owner(ADMIN), None);
    }

    #[test]
    fn no_connection_or_pipe_token_is_the_admin_listener() {
        let mut table = ConnTable::new();
        for generation in [0, 1, GENERATION_MASK] {
            table.next_generation = generation;
            let token = table.insert(()).unwrap();
            assert_ne!(token, ADMIN);
            assert_ne!(pipe_token(token), ADMIN);
        }
        assert_ne!(ADMIN, listener_token(0));
        assert_eq!(listener_index(ADMIN), None);
        assert_eq!(listener_index(SIGNALS), None);
        assert_eq!(
            split(ADMIN),
            (MAX_KEYS, 0),
            "a key the table never hands out"
        );
    }

    #[test]
    fn listener_tokens_map_back_to_their_index() {
        for index in 0..MAX_LISTENERS {
            assert_eq!(listener_index(listener_token(index)), Some(index));
        }
    }

    #[test]
    fn tokens_never_collide_with_the_listener() {
        let mut table = ConnTable::new();
        let mut seen = Vec::new();
        for mut i in 0..1000 {
            let token = table.insert(i).unwrap();
            assert_eq!(listener_index(token), None);
            assert_eq!(listener_index(pipe_token(token)), None);
            assert_ne!(token, SIGNALS);
            assert_eq!(table.get_mut(token), Some(&mut i));
            seen.push(token);
        }
        for token in seen {
            table.remove(token).unwrap();
        }
        assert!(table.is_empty());
    }
}
