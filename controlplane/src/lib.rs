//! Control plane of Turbo (tokio): the store of keys and nodes, customer authorization,
//! node admission and the route table the data plane reads, usage booking, and the
//! HTTP API. It talks to the data plane only through
//! [`turbo_dataplane::control`] messages.
#![warn(missing_docs)]

pub mod accounts;
pub mod api;
mod api_money;
mod api_nodes;
mod api_payments;
mod api_users;
mod api_verdicts;
pub mod canary;
pub mod cli;
pub mod config;
pub mod detect;
pub mod fleet;
pub mod geoip;
pub mod integrity;
pub mod live;
pub mod metrics;
pub mod money;
pub mod netlimit;
pub mod overload;
pub mod pairing;
mod payments;
pub mod registry;
pub mod scoring;
pub mod secrets;
pub mod server;
pub mod service;
pub mod size;
pub mod store;
pub mod tls;
pub mod web;
