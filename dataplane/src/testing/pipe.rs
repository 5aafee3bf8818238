//! An in-memory byte pipe standing in for a customer's TCP socket in unit tests: one
//! direction, a bounded buffer (a writer waits for room, as on a full socket), and
//! an end-of-stream mark. The relay reads the customer's upload from one pipe and
//! writes its download into another; the test plays the customer on the far ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use crate::relay::CustomerRead;

#[derive(Default)]
struct State {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// The writer ended the stream: a reader gets EOF once the bytes are drained.
    ended: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One direction of a customer's connection. Clones share the same bytes.
#[derive(Clone)]
pub(crate) struct Pipe(Rc<RefCell<State>>);

impl Pipe {
    /// A pipe that holds at most `capacity` unread bytes.
    pub(crate) fn new(capacity: usize) -> Pipe {
        Pipe(Rc::new(RefCell::new(State {
            capacity,
            ..State::default()
        })))
    }

    /// Waits until there is room, then queues as much of `data` as fits; returns how
    /// much.
    async fn put(&self, data: &[u8]) -> usize {
        poll_fn(|cx| {
            let mut st = self.0.borrow_mut();
            let room = st.capacity.saturating_sub(st.bytes.len());
            if room == 0 && !data.is_empty() {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = room.min(data.len());
            st.bytes.extend(&data[..n]);
            if let Some(w) = st.reader.take() {
                w.wake();
            }
            Poll::Ready(n)
        })
        .await
    }

    /// Queues all of `data`, waiting for room as needed.
    pub(crate) async fn write(&self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = self.put(data).await;
            data = &data[n..];
        }
    }

    /// Ends the stream (the writer's FIN).
    pub(crate) fn end(&self) {
        let mut st = self.0.borrow_mut();
        st.ended = true;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// Waits for bytes or the end; takes up to `max` bytes (empty at the end).
    pub(crate) async fn take(&self, max: usize) -> Vec<u8> {
        poll_fn(|cx| {
            let mut st = self.0.borrow_mut();
            if st.bytes.is_empty() && !st.ended {
                st.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = st.bytes.len().min(max);
            let out: Vec<u8> = st.bytes.drain(..n).collect();
            if let Some(w) = st.writer.take() {
                w.wake();
            }
            Poll::Ready(out)
        })
        .await
    }

    /// Reads everything until the end.
    pub(crate) async fn read_to_end(&self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let chunk = self.take(usize::MAX).await;
            if chunk.is_empty() {
                return all;
            }
            all.extend_from_slice(&chunk);
        }
    }

    /// Unread bytes.
    pub(crate) fn queued(&self) -> usize {
        self.0.borrow().bytes.len()
    }

    /// Whether the writer ended the stream.
    pub(crate) fn ended(&self) -> bool {
        self.0.borrow().ended
    }
}

fn unsupported<T>(buf: T) -> BufResult<usize, T> {
    let e = std::io::Error::new(std::io::ErrorKind::Unsupported, "vectored I/O");
    (Err(e), buf)
}

impl AsyncReadRent for Pipe {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let chunk = self.take(buf.bytes_total()).await;
        // SAFETY: `chunk` holds at most `bytes_total` bytes, which `buf` has room for
        // from its write pointer; exactly that many are then marked initialised.
        unsafe {
            buf.write_ptr()
                .copy_from_nonoverlapping(chunk.as_ptr(), chunk.len());
            buf.set_init(chunk.len());
        }
        (Ok(chunk.len()), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        unsupported(buf)
    }
}

impl CustomerRead for Pipe {
    async fn readable(&self) -> std::io::Result<()> {
        poll_fn(|cx| {
            let mut st = self.0.borrow_mut();
            if st.bytes.is_empty() && !st.ended {
                st.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }
}

impl AsyncWriteRent for Pipe {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` points at `bytes_init` initialised bytes that `buf` owns
        // for the duration of this call.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let n = self.put(data).await;
        (Ok(n), buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        unsupported(buf)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.end();
        Ok(())
    }
}
