//! Per-core pool of relay buffers, so the relay allocates nothing per chunk.
//!
//! Buffers are handed to monoio IO by value and come back with the result; the relay
//! returns them here. A buffer lost to a cancelled IO is simply replaced, and a large
//! upstream read is handed to quiche and freed once acknowledged. Buffers are never
//! zeroed: reads fill their spare capacity.

use std::cell::RefCell;

/// Size of one relay chunk.
pub(crate) const CHUNK: usize = 32 * 1024;
/// Most idle buffers kept per core; extra returns are freed.
const MAX_IDLE: usize = 1024;

/// A LIFO stack of `CHUNK`-capacity buffers.
#[derive(Default)]
pub(crate) struct BufPool {
    idle: RefCell<Vec<Vec<u8>>>,
}

impl BufPool {
    /// An empty buffer (`len == 0`) with `CHUNK` capacity, for reads into spare
    /// capacity.
    pub(crate) fn empty(&self) -> Vec<u8> {
        let mut b = self
            .idle
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        b.clear();
        b
    }

    /// Returns a buffer to the pool.
    pub(crate) fn put(&self, buf: Vec<u8>) {
        let mut idle = self.idle.borrow_mut();
        if buf.capacity() >= CHUNK && idle.len() < MAX_IDLE {
            idle.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers() {
        let pool = BufPool::default();
        let b = pool.empty();
        assert!(b.capacity() >= CHUNK);
        let ptr = b.as_ptr();
        pool.put(b);
        let again = pool.empty();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
    }
}
