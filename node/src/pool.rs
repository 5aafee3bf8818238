//! Relay buffers, shared by every stream of the node. A stream takes a buffer only
//! when it has bytes to move and gives it back right after, so an idle tunnel holds
//! none; at most [`MAX_FREE`] spare buffers are kept.

use std::cell::RefCell;

/// Size of one relay buffer.
pub const BUF_SIZE: usize = 32 * 1024;
/// Spare buffers kept for reuse (2 MiB).
pub const MAX_FREE: usize = 64;

/// The node's buffer pool (single-threaded, like the node).
#[derive(Debug, Default)]
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
}

impl BufPool {
    /// A buffer of [`BUF_SIZE`] bytes.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_SIZE])
    }

    /// Gives `buf` back.
    pub fn put(&self, buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if free.len() < MAX_FREE && buf.len() == BUF_SIZE {
            free.push(buf);
        }
    }

    /// Spare buffers now.
    pub fn spare(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds_spares() {
        let pool = BufPool::default();
        let bufs: Vec<_> = (0..MAX_FREE + 10).map(|_| pool.take()).collect();
        let first = bufs[0].as_ptr();
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.spare(), MAX_FREE);
        assert_eq!(pool.take().len(), BUF_SIZE);
        let _ = first;
        pool.put(vec![0u8; 10]);
        assert_eq!(pool.spare(), MAX_FREE - 1, "odd-sized buffers are not kept");
    }
}
