//! Byte sizes (re-exported from `turbo_proto::size`).
pub use turbo_proto::size::*;
