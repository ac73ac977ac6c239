//! item-api: placeholder until the API lands.
#![forbid(unsafe_code)]
fn main() {}
