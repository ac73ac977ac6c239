//! hanko-dev: placeholder.
#![forbid(unsafe_code)]
fn main() {}
