//! The smallest useful Pingora reverse proxy: every request goes to one
//! upstream over Pingora's keep-alive pool, with no authentication, no
//! header changes and no logging. `bench/run` loads it next to edge-proxy
//! to show how much of edge-proxy's cost per request is Pingora's own
//! HTTP/1 cycle and how much is edge-proxy's work on top of it.
//!
//! It uses the same Pingora version, allocator and listener read buffer as
//! edge-proxy, so the difference between the two is edge-proxy's code.
//!
//! ```text
//! cargo run --release -p edge-proxy --example minimal_pingora -- \
//!     --listen 127.0.0.1:8081 --upstream 127.0.0.1:8082 --threads 1
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use clap::Parser;
use pingora::modules::http::HttpModules;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service_with_name};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::upstreams::peer::HttpPeer;

/// The same allocator as edge-proxy.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Forwards every request to one upstream, unchanged.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream HTTP/1 server.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pingora's upgrade socket. Each instance on a host needs its own.
    #[arg(long, default_value = "/tmp/minimal-pingora-upgrade.sock")]
    upgrade_socket: PathBuf,
}

struct Forward {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    /// No downstream modules, as in edge-proxy: Pingora's default adds a
    /// compression module that does nothing at level 0 but costs time.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        upgrade_sock: args.upgrade_socket.to_string_lossy().into_owned(),
        // SIGTERM stops at once instead of after Pingora's 300 s default.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        Forward {
            upstream: args.upstream,
        },
        "minimal-pingora",
    );
    // The same listener settings as edge-proxy.
    proxy.add_listener(edge_proxy::listener::tcp(args.listen));
    server.add_service(proxy);
    server.run(RunArgs::default());
}
