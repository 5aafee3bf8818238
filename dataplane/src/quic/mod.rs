//! The per-core QUIC endpoint that nodes dial, and the connections and streams on it.

pub(crate) mod cid;
pub(crate) mod conn;
pub(crate) mod control_state;
pub(crate) mod control_stream;
pub(crate) mod core;
pub(crate) mod dispatch;
pub(crate) mod driver;
pub(crate) mod endpoint;
pub(crate) mod gro;
pub(crate) mod reset;
pub(crate) mod retry;
pub(crate) mod stream;
