//! edge-proxy as a library: the modules the binary wires together, public
//! so that their behaviour can be tested and reused (metrics, reload) without
//! going through a socket.
//!
//! `main.rs` holds only the start-up steps.
#![forbid(unsafe_code)]

pub mod access_format;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod cors;
pub mod drain;
pub mod error;
pub mod forwarding;
pub mod identity;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod refresher;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod service;
pub mod upgrade_socket;
