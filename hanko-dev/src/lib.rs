//! hanko-dev: a Hanko stand-in for development and tests. It serves a JWKS
//! and mints session tokens in exactly Hanko's shape; it is not an identity
//! provider and must never face real users.
#![forbid(unsafe_code)]

pub mod keys;
