//! Test harness shared by every integration test: a private PostgreSQL
//! cluster, the real binaries started as child processes on loopback, and
//! small stand-ins for what cannot run here (Hanko, an echo upstream).
//!
//! Each fixture stops what it started, by PID, when it is dropped. Nothing
//! here listens on anything but 127.0.0.1.
#![forbid(unsafe_code)]

pub mod connection;
pub mod echo;
pub mod edge_proxy;
pub mod hanko;
pub mod item_api;
pub mod jwks;
pub mod pg;
pub mod process;
