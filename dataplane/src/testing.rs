//! Test support shared by the unit tests of this crate: a monoio runtime (the legacy
//! driver, with timers) to run one test on, and the control channel's far end.

use std::future::Future;

use crate::control::{control_channel, ControlHandle, ControlReceiver};

/// Runs `f` to completion on a fresh single-threaded monoio runtime.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(f)
}

/// A control channel: the handle the code under test talks through, and the receiver
/// the test answers on.
pub(crate) fn control() -> (ControlHandle, ControlReceiver) {
    control_channel()
}

/// Waits until `done` holds, checking every millisecond (for states no event marks,
/// such as a task having reached an await point).
pub(crate) async fn until(done: impl Fn() -> bool) {
    while !done() {
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

pub(crate) mod pipe;
