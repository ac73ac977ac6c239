//! hanko-dev: a Hanko stand-in for development and tests. It serves a JWKS
//! and mints session tokens in exactly Hanko's shape; it is not an identity
//! provider and must never face real users.
//!
//! [`up`] runs the whole hanko-edge stack locally on top of it.
#![forbid(unsafe_code)]

pub mod claims;
pub mod keys;
pub mod server;
pub mod store;
pub mod up;
pub mod verify;
