//! The few facts `hanko-dev up` needs from the shared `config.toml`: every
//! address the stack will listen on, where edge-proxy expects Hanko, and
//! the audience tokens must carry.
//!
//! This reads the file loosely on purpose. Validating it is the job of
//! `edge-proxy check` and `item-api`, which `up` runs before anything
//! starts.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use anyhow::{Context, Result, bail};
use toml::Value;

const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_PROXY_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_BACKEND_LISTEN: &str = "127.0.0.1:8081";
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// One address the stack listens on and the config key that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The address.
    pub addr: SocketAddr,
    /// The config key, as a reader would look for it (`[proxy] listen`).
    pub key: &'static str,
    /// Other keys to change along with this port, as a sentence tail.
    pub also_change: &'static str,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.key)
    }
}

/// The settings `up` reads from `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// edge-proxy's client-facing addresses; the first goes in the curl lines.
    pub proxy_listen: Vec<SocketAddr>,
    /// edge-proxy's admin address (`/healthz`, `/readyz`).
    pub proxy_admin_listen: SocketAddr,
    /// item-api's address.
    pub backend_listen: SocketAddr,
    /// hanko-dev's listen address, the one edge-proxy fetches its key set from.
    pub hanko_listen: SocketAddr,
    /// The audience the demo tokens carry: the first one edge-proxy accepts.
    pub audience: String,
    /// Whether some route sends traffic to `backend_listen`.
    pub routes_reach_backend: bool,
}

impl StackConfig {
    /// Reads `path`.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or parsed, or a key `up` needs is
    /// missing or not a loopback address, naming the key and value.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the config file {}", path.display()))
    }

    /// Parses config text; see [`StackConfig::load`].
    ///
    /// # Errors
    ///
    /// As for [`StackConfig::load`].
    pub fn parse(text: &str) -> Result<Self> {
        let root: Value = toml::from_str(text).map_err(|error| syntax_error(&error, text))?;
        let proxy = root.get("proxy").context("the [proxy] table is missing")?;
        let auth = proxy
            .get("auth")
            .context("the [proxy.auth] table is missing")?;

        let proxy_listen = match proxy.get("listen") {
            None => vec![parse_loopback(DEFAULT_PROXY_LISTEN, "[proxy] listen")?],
            Some(Value::String(one)) => vec![parse_loopback(one, "[proxy] listen")?],
            Some(Value::Array(many)) if !many.is_empty() => many
                .iter()
                .map(|value| {
                    let text = value
                        .as_str()
                        .context("[proxy] listen entries must be strings")?;
                    parse_loopback(text, "[proxy] listen")
                })
                .collect::<Result<_>>()?,
            Some(other) => bail!("[proxy] listen = {other} is not a list of addresses"),
        };
        let proxy_admin_listen = parse_loopback(
            string_or(
                proxy,
                "admin_listen",
                DEFAULT_PROXY_ADMIN_LISTEN,
                "[proxy] admin_listen",
            )?,
            "[proxy] admin_listen",
        )?;
        let backend_listen = match root.get("backend") {
            Some(backend) => parse_loopback(
                string_or(
                    backend,
                    "listen",
                    DEFAULT_BACKEND_LISTEN,
                    "[backend] listen",
                )?,
                "[backend] listen",
            )?,
            None => parse_loopback(DEFAULT_BACKEND_LISTEN, "[backend] listen")?,
        };

        Ok(Self {
            proxy_listen,
            proxy_admin_listen,
            backend_listen,
            hanko_listen: hanko_address(auth)?,
            audience: first_audience(auth)?,
            routes_reach_backend: routes_reach(proxy, backend_listen),
        })
    }

    /// Lists every address the stack will listen on, with its key.
    pub fn listeners(&self) -> Vec<Listener> {
        let mut listeners: Vec<Listener> = self
            .proxy_listen
            .iter()
            .map(|addr| Listener {
                addr: *addr,
                key: "[proxy] listen",
                also_change: "",
            })
            .collect();
        listeners.push(Listener {
            addr: self.proxy_admin_listen,
            key: "[proxy] admin_listen",
            also_change: "",
        });
        listeners.push(Listener {
            addr: self.backend_listen,
            key: "[backend] listen",
            also_change: " and the `upstream` of the [[proxy.routes]] entry that points at it",
        });
        listeners.push(Listener {
            addr: self.hanko_listen,
            key: "[proxy.auth] hanko_api_url",
            also_change: "",
        });
        listeners
    }

    /// Checks that every address can be bound right now and that no two
    /// keys share one.
    ///
    /// # Errors
    ///
    /// Fails on the first taken or shared address, saying which key sets it
    /// and how to choose another port.
    pub fn check_ports_free(&self, config_path: &Path) -> Result<()> {
        let listeners = self.listeners();
        for (index, listener) in listeners.iter().enumerate() {
            if let Some(other) = listeners[..index].iter().find(|l| l.addr == listener.addr) {
                bail!(
                    "{listener} and {other} are the same address; give each its own port in {}",
                    config_path.display()
                );
            }
        }
        for listener in &listeners {
            if let Err(error) = TcpListener::bind(listener.addr) {
                bail!(
                    "cannot listen on {listener}: {error}. Stop the program that holds port {port} \
                     (`ss -ltnp 'sport = :{port}'` shows it), or copy {config} to a new file, set \
                     another port in {key}{also}, and run `hanko-dev up --config <new file>`",
                    port = listener.addr.port(),
                    config = config_path.display(),
                    key = listener.key,
                    also = listener.also_change,
                );
            }
        }
        Ok(())
    }
}

fn string_or<'a>(table: &'a Value, key: &str, default: &'a str, name: &str) -> Result<&'a str> {
    match table.get(key) {
        None => Ok(default),
        Some(Value::String(text)) => Ok(text),
        Some(other) => bail!("{name} = {other} is not a string"),
    }
}

fn parse_loopback(text: &str, key: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = text
        .parse()
        .with_context(|| format!("{key} = {text:?} is not an IP address with a port"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "{key} = {text:?} is not a loopback address; `hanko-dev up` is a local development \
             stack and listens on 127.0.0.1 only"
        );
    }
    if addr.port() == 0 {
        bail!("{key} = {text:?} has port 0; choose a fixed port so the stack can find it");
    }
    Ok(addr)
}

/// Derives hanko-dev's listen address from `hanko_api_url` (or `jwks_url`).
fn hanko_address(auth: &Value) -> Result<SocketAddr> {
    let (key, text, expected_path) = if let Some(url) = auth.get("hanko_api_url") {
        ("[proxy.auth] hanko_api_url", url, "/")
    } else if let Some(url) = auth.get("jwks_url") {
        ("[proxy.auth] jwks_url", url, JWKS_PATH)
    } else {
        bail!("[proxy.auth] has neither hanko_api_url nor jwks_url");
    };
    let text = text
        .as_str()
        .with_context(|| format!("{key} must be a string"))?;
    let url = url::Url::parse(text).with_context(|| format!("{key} = {text:?} is not a URL"))?;

    let host_ok = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    let path = url.path().trim_end_matches('/');
    if url.scheme() != "http" || !host_ok || path != expected_path.trim_end_matches('/') {
        bail!(
            "{key} = {text:?}: `hanko-dev up` runs the Hanko stand-in itself, so this must be \
             http://127.0.0.1:PORT{}; to use a real Hanko, run edge-proxy without `up`",
            if expected_path == "/" { "" } else { JWKS_PATH }
        );
    }
    let port = url
        .port_or_known_default()
        .with_context(|| format!("{key} = {text:?} has no port"))?;
    let ip = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.into(),
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    Ok(SocketAddr::new(ip, port))
}

fn first_audience(auth: &Value) -> Result<String> {
    let first = match auth.get("audience") {
        Some(Value::String(one)) => Some(one.clone()),
        Some(Value::Array(many)) => many.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    match first {
        Some(audience) if !audience.is_empty() => Ok(audience),
        _ => bail!("[proxy.auth] audience is missing or empty; edge-proxy requires one"),
    }
}

fn routes_reach(proxy: &Value, backend: SocketAddr) -> bool {
    let Some(routes) = proxy.get("routes").and_then(Value::as_array) else {
        return false;
    };
    let upstreams = routes.iter().filter_map(|route| route.get("upstream"));
    let mut addresses = upstreams.flat_map(|upstream| match upstream {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    });
    addresses.any(|text| {
        text.parse::<SocketAddr>().is_ok_and(|addr| addr == backend)
            || text == format!("localhost:{}", backend.port())
    })
}

/// Describes a TOML error in `text` by line, column and message, without
/// the line itself: it may be `[backend]`'s database URL with a password.
fn syntax_error(error: &toml::de::Error, text: &str) -> anyhow::Error {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return anyhow::anyhow!("the file is not valid TOML: {message}");
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    anyhow::anyhow!("the file is not valid TOML: line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../config.toml");

    #[test]
    fn shipped_config_parses() {
        let config = StackConfig::parse(SHIPPED).expect("the shipped config.toml works with up");

        assert_eq!(
            config.proxy_listen,
            ["127.0.0.1:8080".parse().expect("addr")]
        );
        assert_eq!(config.hanko_listen, "127.0.0.1:8000".parse().expect("addr"));
        assert_eq!(
            config.backend_listen,
            "127.0.0.1:8081".parse().expect("addr")
        );
        assert_eq!(config.audience, "localhost");
        assert!(config.routes_reach_backend);
    }

    #[test]
    fn syntax_error_names_the_line_without_its_text() {
        let text = "[backend]\ndatabase_url = \"postgres://app:s3cret@db/items\n";

        let message = format!("{:#}", StackConfig::parse(text).expect_err("unterminated"));

        assert!(
            message.starts_with("the file is not valid TOML: line 2, column 47: "),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    fn config(proxy_extra: &str, auth: &str, backend: &str) -> String {
        format!(
            "[proxy]\n{proxy_extra}\n[proxy.auth]\n{auth}\n\n[[proxy.routes]]\npath_prefix = \"/api\"\n\
             upstream = [\"127.0.0.1:7001\"]\n\n[backend]\n{backend}\n"
        )
    }

    #[test]
    fn defaults_fill_missing_addresses() {
        let text = config(
            "",
            "hanko_api_url = \"http://localhost:7000\"\naudience = \"app\"",
            "",
        );
        let parsed = StackConfig::parse(&text).expect("parses");

        assert_eq!(
            parsed.proxy_listen,
            ["127.0.0.1:8080".parse().expect("addr")]
        );
        assert_eq!(
            parsed.proxy_admin_listen,
            "127.0.0.1:9090".parse().expect("addr")
        );
        assert_eq!(parsed.hanko_listen, "127.0.0.1:7000".parse().expect("addr"));
        assert_eq!(parsed.audience, "app");
        assert!(!parsed.routes_reach_backend);
    }

    #[test]
    fn jwks_url_is_accepted_in_place_of_api_url() {
        let text = config(
            "",
            "jwks_url = \"http://127.0.0.1:7000/.well-known/jwks.json\"\naudience = [\"a\"]",
            "listen = \"127.0.0.1:7001\"",
        );
        let parsed = StackConfig::parse(&text).expect("parses");

        assert_eq!(parsed.hanko_listen, "127.0.0.1:7000".parse().expect("addr"));
        assert!(parsed.routes_reach_backend);
    }

    #[test]
    fn remote_hanko_is_rejected_with_the_key_name() {
        let text = config(
            "",
            "hanko_api_url = \"https://tenant.hanko.io\"\naudience = \"a\"",
            "",
        );
        let error = format!("{:#}", StackConfig::parse(&text).expect_err("must fail"));

        assert!(error.contains("hanko_api_url"), "{error}");
    }

    #[test]
    fn non_loopback_listen_is_rejected() {
        let text = config(
            "listen = [\"0.0.0.0:8080\"]",
            "hanko_api_url = \"http://127.0.0.1:8000\"\naudience = \"a\"",
            "",
        );
        let error = format!("{:#}", StackConfig::parse(&text).expect_err("must fail"));

        assert!(error.contains("[proxy] listen"), "{error}");
        assert!(error.contains("loopback"), "{error}");
    }

    #[test]
    fn missing_audience_is_rejected() {
        let text = config("", "hanko_api_url = \"http://127.0.0.1:8000\"", "");
        let error = format!("{:#}", StackConfig::parse(&text).expect_err("must fail"));

        assert!(error.contains("audience"), "{error}");
    }

    /// Returns `count` distinct loopback ports that were free a moment ago.
    fn free_ports(count: usize) -> Vec<u16> {
        // All listeners stay open until every port is read, so no port is
        // returned twice.
        let listeners: Vec<TcpListener> = (0..count)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        listeners
            .iter()
            .map(|listener| listener.local_addr().expect("addr").port())
            .collect()
    }

    #[test]
    fn taken_port_is_named_with_its_key() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        // Every other listener gets a free port, because the check stops at
        // the first taken one and a running stack listens on the default ports.
        let ports = free_ports(3);
        let (proxy, admin, hanko) = (ports[0], ports[1], ports[2]);
        let text = config(
            &format!("listen = \"127.0.0.1:{proxy}\"\nadmin_listen = \"127.0.0.1:{admin}\""),
            &format!("hanko_api_url = \"http://127.0.0.1:{hanko}\"\naudience = \"a\""),
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let parsed = StackConfig::parse(&text).expect("parses");
        let error = parsed
            .check_ports_free(Path::new("my.toml"))
            .expect_err("port is taken")
            .to_string();

        assert!(
            error.contains(&format!("127.0.0.1:{port} ([backend] listen)")),
            "{error}"
        );
        assert!(error.contains("--config"), "{error}");
    }

    #[test]
    fn shared_port_is_rejected() {
        let text = config(
            "listen = [\"127.0.0.1:8000\"]",
            "hanko_api_url = \"http://127.0.0.1:8000\"\naudience = \"a\"",
            "",
        );
        let parsed = StackConfig::parse(&text).expect("parses");
        let error = parsed
            .check_ports_free(Path::new("my.toml"))
            .expect_err("shared")
            .to_string();

        assert!(error.contains("same address"), "{error}");
    }
}
