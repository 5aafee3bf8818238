//! Single-threaded wake-up primitives for tasks on one core: a level-triggered
//! [`Signal`] and a join that stops at the first error.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Poll, Waker};

/// A wake-up flag with one waiter: `notify` sets it, `wait` consumes it. Notifying
/// twice before the waiter runs wakes it once. Not `Send`: for tasks on one core.
#[derive(Default)]
pub(crate) struct Signal {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    /// Sets the flag and wakes the waiter, if any.
    pub(crate) fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves once the flag is set, clearing it.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Runs `a` and `b` concurrently, and `watch` alongside them. Returns `Ok` when both
/// `a` and `b` finish with `Ok`; returns the first `Err` from any of the three at once,
/// dropping (cancelling) the others. `watch` is expected to only ever fail.
/// The futures come pinned by the caller, so they are stored once, in the caller.
pub(crate) async fn join_or_abort<E>(
    mut a: Pin<&mut impl Future<Output = Result<(), E>>>,
    mut b: Pin<&mut impl Future<Output = Result<(), E>>>,
    mut watch: Pin<&mut impl Future<Output = E>>,
) -> Result<(), E> {
    let (mut a_done, mut b_done) = (false, false);
    poll_fn(|cx| {
        if !a_done {
            if let Poll::Ready(r) = a.as_mut().poll(cx) {
                r?;
                a_done = true;
            }
        }
        if !b_done {
            if let Poll::Ready(r) = b.as_mut().poll(cx) {
                r?;
                b_done = true;
            }
        }
        if a_done && b_done {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(e) = watch.as_mut().poll(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::rc::Rc;

    use super::*;

    #[monoio::test_all]
    async fn signal_wakes_waiter_once_per_burst() {
        let s = Rc::new(Signal::default());
        let waiter = {
            let s = s.clone();
            monoio::spawn(async move {
                s.wait().await;
                1
            })
        };
        s.notify();
        s.notify();
        assert_eq!(waiter.await, 1);
        // The burst was consumed: the flag is clear again.
        assert!(!s.set.get());
    }

    #[monoio::test_all]
    async fn join_stops_at_first_error() {
        let never = pin!(std::future::pending::<Result<(), &str>>());
        let failing = pin!(async { Err::<(), _>("boom") });
        let r = join_or_abort(never, failing, pin!(std::future::pending())).await;
        assert_eq!(r, Err("boom"));
        let ok = join_or_abort(
            pin!(async { Ok::<(), &str>(()) }),
            pin!(async { Ok(()) }),
            pin!(std::future::pending()),
        )
        .await;
        assert_eq!(ok, Ok(()));
        let watched = join_or_abort(
            pin!(std::future::pending::<Result<(), &str>>()),
            pin!(async { Ok(()) }),
            pin!(async { "closed" }),
        )
        .await;
        assert_eq!(watched, Err("closed"));
    }
}
