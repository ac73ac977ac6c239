//! hanko-dev library: placeholder.
#![forbid(unsafe_code)]
