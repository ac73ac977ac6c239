//! Settings of the proxy's listening sockets, shared by the binary and the
//! minimal Pingora proxy the benchmark compares it with.

use std::net::SocketAddr;

use pingora::listeners::{L4BufferSettings, ListenerConfig};

/// Read buffer of each downstream connection, in bytes. Pingora 0.9.1 gives
/// every accepted connection a zero-filled 64 KiB buffer by default, which
/// made 1,000 idle keep-alive connections cost about 98 MiB. That size pays
/// off for TLS records, which edge-proxy does not terminate. Pingora's HTTP/1
/// code reads the request head and body into its own buffers, so larger
/// heads and bodies still pass, only in more reads.
pub const DOWNSTREAM_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Returns the listener for `address` with edge-proxy's read buffer size.
pub fn tcp(address: SocketAddr) -> ListenerConfig {
    let buffers = L4BufferSettings::default().read(DOWNSTREAM_READ_BUFFER_BYTES);
    ListenerConfig::tcp(address.to_string()).l4_buffer(buffers)
}
