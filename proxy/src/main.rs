//! edge-proxy: placeholder until the proxy lands.
#![forbid(unsafe_code)]
fn main() {}
