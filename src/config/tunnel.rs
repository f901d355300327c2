//! `tlsnet tunnel --config FILE`: any number of tunnels in one process, each a `[[tunnel]]`
//! table with a `name`, a `mode` (`"server"` or `"client"`) and the flags of `tlsnet tunnel
//! server` or `tlsnet tunnel client` as keys (`_` for `-`).
//!
//! ```toml
//! metrics = "127.0.0.1:9090"      # for the whole process, like log_format
//!
//! [[tunnel]]
//! name = "redis"
//! mode = "server"
//! listen = ["[::]:6380"]
//! target = "127.0.0.1:6379"
//! cert = ["/etc/tlsnet/redis.pem"]
//! key = ["/etc/tlsnet/redis-key.pem"]
//! client_ca = "/etc/tlsnet/ops-ca.pem"
//! allow_ou = ["ops"]
//!
//! [[tunnel]]
//! name = "db"
//! mode = "client"
//! listen = ["127.0.0.1:5432"]
//! target = "db.internal:5433"
//! ca = "/etc/tlsnet/ops-ca.pem"
//! ```
//!
//! [`TunnelsConfig::load`] checks everything that can be checked without reading the
//! certificate files; the values it gives are the ones the flags give ([`ServerTunnel`],
//! [`ClientTunnel`]), which [`crate::tunnel::TunnelSet`] runs.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;

use super::serve::with_server_keys;
use super::settings::{nonzero, DEFAULT_RELOAD_INTERVAL};
use super::{
    de, line_of_key, parse, read, ClientTlsSettings, ConfigError, LogFormat, Naming, ServerLimits,
    ServerTlsSettings, SettingError,
};
use crate::error::Result;
use crate::net::client::{split_host_port, Connector};
use crate::service::{Router, Service};
use crate::tls::{server_name, AccessPolicy, ClientAuth, KeyLogTarget, Pattern, Rule, SpkiPin};
use crate::tunnel::target::{is_loopback_listen, Target};
use crate::tunnel::{TunnelClient, TunnelClientOptions, TunnelOptions, TunnelService};

/// A server tunnel: TLS in front of a plain backend (`tlsnet tunnel server`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerTunnel {
    /// Addresses to listen on for TLS clients.
    pub listen: Vec<String>,
    /// The backend.
    pub target: Target,
    /// Allow a target that is not on this machine.
    pub unsafe_target: bool,
    /// Certificates, client authentication, `allow_*` rules.
    pub tls: ServerTlsSettings,
    /// How often the certificate files are checked (0: on SIGHUP only).
    pub reload_interval: Duration,
    /// Admit every client the client CA signed.
    pub allow_all: bool,
    /// Send a PROXY v2 header to the backend.
    pub proxy_protocol: bool,
    /// ALPN ids offered for the tunnel.
    pub alpn: Vec<String>,
    /// The backend must accept within this time.
    pub connect_timeout: Duration,
    /// Close a connection this long after it opened (0: never).
    pub max_lifetime: Duration,
    /// Connection limit and deadlines.
    pub limits: ServerLimits,
}

impl ServerTunnel {
    /// Checks the settings without reading a file; returns the client authentication in force.
    pub fn check(&self, naming: Naming) -> Result<ClientAuth, SettingError> {
        if self.listen.is_empty() {
            return Err(SettingError::new("listen", "needs an address"));
        }
        if !self.target.is_local() && !self.unsafe_target {
            return Err(SettingError::new(
                "target",
                format!(
                    "{} is not on this machine: the bytes behind the tunnel would cross the network in plain text; give {} if that is what you want",
                    self.target,
                    naming.name("unsafe_target")
                ),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(SettingError::new("connect_timeout", "must be more than 0"));
        }
        self.limits.options()?;
        let client_auth = self.tls.check(naming)?;
        let policy = self.tls.policy();
        if self.allow_all && !policy.is_empty() {
            return Err(SettingError::new(
                "allow_all",
                "admits every client the CA signed: it cannot go with allow_* rules",
            ));
        }
        if client_auth == ClientAuth::Required && policy.is_empty() && !self.allow_all {
            return Err(SettingError::new(
                "allow_all",
                format!(
                    "who may use the tunnel? give {}, {}, {}, {} or {}, or {} for every client the CA signed",
                    naming.name("allow_cn"),
                    naming.name("allow_ou"),
                    naming.name("allow_dns"),
                    naming.name("allow_uri"),
                    naming.name("allow_spki_pin"),
                    naming.name("allow_all"),
                ),
            ));
        }
        Ok(client_auth)
    }

    /// How each connection is treated.
    pub fn tunnel_options(&self) -> TunnelOptions {
        TunnelOptions {
            connect_timeout: self.connect_timeout,
            max_lifetime: nonzero(self.max_lifetime),
            proxy_protocol: self.proxy_protocol,
        }
    }

    /// The tunnel as the server's services: the default one, and under every `alpn` id.
    pub fn router(&self) -> Router {
        let tunnel: Arc<dyn Service> = Arc::new(TunnelService::new(
            self.target.clone(),
            self.tunnel_options(),
        ));
        let mut router = Router::new(tunnel.clone());
        for id in &self.alpn {
            router = router.route(id.as_bytes(), tunnel.clone());
        }
        router
    }

    /// The reload interval, `None` for "only on SIGHUP".
    pub fn reload_every(&self) -> Option<Duration> {
        nonzero(self.reload_interval)
    }
}

/// A client tunnel: a local port carried over TLS to a server (`tlsnet tunnel client`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientTunnel {
    /// Local addresses to listen on.
    pub listen: Vec<String>,
    /// The TLS server, `HOST:PORT`.
    pub target: String,
    /// Allow a listening address other machines can reach.
    pub unsafe_listen: bool,
    /// The name to send as SNI and to verify (default: the target's host).
    pub servername: Option<String>,
    /// Trust and this client's certificate.
    pub tls: ClientTlsSettings,
    /// The server's certificate must have one of these common names...
    pub verify_cn: Vec<String>,
    /// ... or a DNS name matching one of these...
    pub verify_dns: Vec<Pattern>,
    /// ... or a URI matching one of these...
    pub verify_uri: Vec<Pattern>,
    /// ... or one of these key pins.
    pub verify_spki_pin: Vec<SpkiPin>,
    /// Deadline of the connection to the server and of the handshake.
    pub connect_timeout: Duration,
    /// Close after this long without traffic (0: never).
    pub idle_timeout: Duration,
    /// Local connections served at once.
    pub max_connections: usize,
    /// How long open connections may take to finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl ClientTunnel {
    /// Checks the settings without reading a file; returns the target's host and the name
    /// the server's certificate is checked for.
    pub fn check(&self, naming: Naming) -> Result<(String, ServerName<'static>), SettingError> {
        if self.listen.is_empty() {
            return Err(SettingError::new("listen", "needs an address"));
        }
        for spec in &self.listen {
            if !is_loopback_listen(spec) && !self.unsafe_listen {
                return Err(SettingError::new(
                    "listen",
                    format!(
                        "{spec} is not a loopback address: other machines could use this client's identity; give {} if that is what you want",
                        naming.name("unsafe_listen")
                    ),
                ));
            }
        }
        if self.max_connections == 0 {
            return Err(SettingError::new("max_connections", "must be at least 1"));
        }
        let (host, _) = split_host_port(&self.target)
            .map_err(|e| SettingError::caused_by("target", "is not HOST:PORT", e))?;
        let name = self.servername.clone().unwrap_or_else(|| host.clone());
        let name = server_name(&name).map_err(|e| {
            SettingError::caused_by(
                if self.servername.is_some() {
                    "servername"
                } else {
                    "target"
                },
                "is not a name to verify",
                e,
            )
        })?;
        self.tls.check(naming)?;
        Ok((host, name))
    }

    /// The `verify_*` rules.
    pub fn policy(&self) -> AccessPolicy {
        let mut rules = Vec::new();
        rules.extend(self.verify_cn.iter().cloned().map(Rule::CommonName));
        rules.extend(self.verify_dns.iter().cloned().map(Rule::Dns));
        rules.extend(self.verify_uri.iter().cloned().map(Rule::Uri));
        rules.extend(self.verify_spki_pin.iter().copied().map(Rule::SpkiPin));
        AccessPolicy::new(rules)
    }

    /// Checks, reads the trust files and builds the tunnel client (blocking).
    pub fn build(&self, naming: Naming) -> Result<TunnelClient> {
        let (host, name) = self.check(naming)?;
        let (options, _) = self.tls.options(&host, false, naming)?;
        self.client(options, name)
    }

    /// The tunnel client with these TLS options (from [`ClientTlsSettings::options`]) for
    /// the server `name` (blocking: it may read the system's roots).
    pub fn client(
        &self,
        mut options: crate::tls::ClientTlsOptions,
        name: ServerName<'static>,
    ) -> Result<TunnelClient> {
        // Checked in the handshake: a server that matches no rule never gets a byte.
        options.server_policy = self.policy();
        let mut connector = Connector::new(options.build()?);
        connector.connect_timeout = self.connect_timeout;
        connector.handshake_timeout = self.connect_timeout;
        Ok(TunnelClient::with_options(
            connector,
            self.target.clone(),
            name,
            TunnelClientOptions {
                max_connections: self.max_connections,
                idle_timeout: nonzero(self.idle_timeout),
                shutdown_timeout: self.shutdown_timeout,
            },
        ))
    }
}

/// What a tunnel is.
#[derive(Clone, Debug, PartialEq)]
pub enum TunnelKind {
    /// `mode = "server"`.
    Server(ServerTunnel),
    /// `mode = "client"`.
    Client(ClientTunnel),
}

/// One tunnel of a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelSpec {
    /// Its name: in log lines (`tunnel=NAME`) and metrics (`server="NAME"`).
    pub name: String,
    /// Its settings.
    pub kind: TunnelKind,
}

impl TunnelSpec {
    /// The addresses it listens on.
    pub fn listen(&self) -> &[String] {
        match &self.kind {
            TunnelKind::Server(s) => &s.listen,
            TunnelKind::Client(c) => &c.listen,
        }
    }
}

/// A whole tunnels file, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelsConfig {
    /// The file.
    pub path: PathBuf,
    /// The metrics endpoint of the process (read at start only).
    pub metrics: Option<String>,
    /// The log format of the process (read at start only).
    pub log_format: Option<LogFormat>,
    /// How often the file is checked for changes (0: on SIGHUP only).
    pub reload_interval: Duration,
    /// The tunnels, in the file's order.
    pub tunnels: Vec<TunnelSpec>,
}

/// `mode`: which side of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// TLS in front of a plain backend.
    Server,
    /// A local port to a TLS server.
    Client,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelsFile {
    metrics: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default, deserialize_with = "de::duration")]
    reload_interval: Option<Duration>,
    #[serde(default)]
    tunnel: Vec<toml::Spanned<TunnelEntry>>,
}

with_server_keys! {
    /// A `[[tunnel]]` table as written: the keys of both modes (which belong to the other
    /// mode is checked afterwards, so that the error can say so).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TunnelEntry {
        /// `name`.
        pub name: String,
        /// `mode`.
        pub mode: Mode,
        /// `target`.
        pub target: Option<String>,
        /// `unsafe_target` (server).
        pub unsafe_target: Option<bool>,
        /// `allow_all` (server).
        pub allow_all: Option<bool>,
        /// `proxy_protocol` (server).
        pub proxy_protocol: Option<bool>,
        /// `connect_timeout`.
        #[serde(default, deserialize_with = "de::duration")]
        pub connect_timeout: Option<Duration>,
        /// `max_lifetime` (server).
        #[serde(default, deserialize_with = "de::duration")]
        pub max_lifetime: Option<Duration>,
        /// `unsafe_listen` (client).
        pub unsafe_listen: Option<bool>,
        /// `servername` (client).
        pub servername: Option<String>,
        /// `ca` (client).
        pub ca: Option<PathBuf>,
        /// `pin` (client).
        #[serde(default, deserialize_with = "de::pin")]
        pub pin: Option<SpkiPin>,
        /// `verify_cn` (client).
        #[serde(default, deserialize_with = "de::strings")]
        pub verify_cn: Option<Vec<String>>,
        /// `verify_dns` (client).
        #[serde(default, deserialize_with = "de::dns_patterns")]
        pub verify_dns: Option<Vec<Pattern>>,
        /// `verify_uri` (client).
        #[serde(default, deserialize_with = "de::uri_patterns")]
        pub verify_uri: Option<Vec<Pattern>>,
        /// `verify_spki_pin` (client).
        #[serde(default, deserialize_with = "de::pins")]
        pub verify_spki_pin: Option<Vec<SpkiPin>>,
    }
}

/// Keys of server tunnels only.
const SERVER_ONLY: &[&str] = &[
    "unsafe_target",
    "client_ca",
    "client_auth",
    "allow_cn",
    "allow_ou",
    "allow_dns",
    "allow_uri",
    "allow_spki_pin",
    "allow_all",
    "reload_interval",
    "proxy_protocol",
    "alpn",
    "max_lifetime",
    "handshake_timeout",
    "ktls",
];

/// Keys of client tunnels only.
const CLIENT_ONLY: &[&str] = &[
    "unsafe_listen",
    "servername",
    "ca",
    "pin",
    "verify_cn",
    "verify_dns",
    "verify_uri",
    "verify_spki_pin",
];

/// The file being checked: its text, for the lines of keys.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn invalid(&self, tunnel: Option<(&str, Range<usize>)>, e: SettingError) -> ConfigError {
        let (name, region) = match tunnel {
            Some((name, region)) => (Some(name.to_owned()), region),
            None => (None, 0..self.text.len()),
        };
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: line_of_key(self.text, region, e.key),
            tunnel: name,
            source: e,
        }
    }
}

impl TunnelsConfig {
    /// Reads and checks `path` (blocking).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Checks `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        // The syntax first (its errors have no tunnel), then the tables as tunnels, with the
        // tunnel that holds an error named from the untyped tables.
        let table: toml::Table = parse(path, text, |_| None)?;
        let headers = tunnel_headers(text);
        let name_of = |index: usize| -> Option<String> {
            table
                .get("tunnel")?
                .as_array()?
                .get(index)?
                .get("name")?
                .as_str()
                .map(str::to_owned)
        };
        let file: TunnelsFile = parse(path, text, |offset| {
            let index = headers.iter().take_while(|&&start| start <= offset).count();
            index.checked_sub(1).and_then(name_of)
        })?;
        let source = Source { path, text };
        let mut tunnels = Vec::new();
        let mut names = BTreeSet::new();
        let mut listens = BTreeSet::new();
        let starts: Vec<usize> = file.tunnel.iter().map(|t| t.span().start).collect();
        for (index, entry) in file.tunnel.iter().enumerate() {
            let end = starts.get(index + 1).copied().unwrap_or(text.len());
            let region = entry.span().start..end;
            let entry = entry.get_ref();
            let here = Some((entry.name.as_str(), region.clone()));
            let fail = |e: SettingError| source.invalid(here.clone(), e);
            if entry.name.trim().is_empty() {
                return Err(fail(SettingError::new("name", "must not be empty")));
            }
            if !names.insert(entry.name.clone()) {
                return Err(fail(SettingError::new(
                    "name",
                    format!("another tunnel is named \"{}\"", entry.name),
                )));
            }
            let keys = table
                .get("tunnel")
                .and_then(|t| t.as_array())
                .and_then(|a| a.get(index))
                .and_then(|t| t.as_table());
            let (other, other_mode) = match entry.mode {
                Mode::Server => (CLIENT_ONLY, "client"),
                Mode::Client => (SERVER_ONLY, "server"),
            };
            if let Some(key) = keys
                .into_iter()
                .flat_map(|t| t.keys())
                .find_map(|k| other.iter().find(|o| **o == k.as_str()))
            {
                return Err(fail(SettingError::new(
                    key,
                    format!("is a key of mode = \"{other_mode}\" tunnels"),
                )));
            }
            let spec = entry.spec().map_err(&fail)?;
            for addr in spec.listen() {
                if !listens.insert(addr.clone()) {
                    return Err(fail(SettingError::new(
                        "listen",
                        format!("{addr} is also the listen address of another tunnel"),
                    )));
                }
            }
            tunnels.push(spec);
        }
        Ok(TunnelsConfig {
            path: path.to_owned(),
            metrics: file.metrics,
            log_format: file.log_format,
            reload_interval: file.reload_interval.unwrap_or(DEFAULT_RELOAD_INTERVAL),
            tunnels,
        })
    }
}

/// Where each `[[tunnel]]` header starts.
fn tunnel_headers(text: &str) -> Vec<usize> {
    let mut offset = 0;
    let mut starts = Vec::new();
    for line in text.split_inclusive('\n') {
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.starts_with("[[tunnel]]") {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
}

impl TunnelEntry {
    /// The tunnel these keys give, checked.
    fn spec(&self) -> Result<TunnelSpec, SettingError> {
        let naming = Naming::Keys;
        let listen = self.listen.clone().ok_or_else(|| {
            SettingError::new("listen", "is missing: where does the tunnel listen?")
        })?;
        let target = self
            .target
            .clone()
            .ok_or_else(|| SettingError::new("target", "is missing: where does the tunnel go?"))?;
        let kind = match self.mode {
            Mode::Server => {
                let target = target
                    .parse::<Target>()
                    .map_err(|e| SettingError::caused_by("target", "cannot be used", e))?;
                let server = ServerTunnel {
                    listen,
                    target,
                    unsafe_target: self.unsafe_target.unwrap_or(false),
                    tls: self.server_tls(),
                    reload_interval: self.reload_interval.unwrap_or(DEFAULT_RELOAD_INTERVAL),
                    allow_all: self.allow_all.unwrap_or(false),
                    proxy_protocol: self.proxy_protocol.unwrap_or(false),
                    alpn: self.alpn.clone().unwrap_or_default(),
                    connect_timeout: self
                        .connect_timeout
                        .unwrap_or(TunnelOptions::default().connect_timeout),
                    max_lifetime: self.max_lifetime.unwrap_or_default(),
                    limits: self.server_limits(),
                };
                server.check(naming)?;
                TunnelKind::Server(server)
            }
            Mode::Client => {
                let defaults = TunnelClientOptions::default();
                let one = |key: &'static str, list: &Option<Vec<PathBuf>>| match list.as_deref() {
                    None | Some([]) => Ok(None),
                    Some([one]) => Ok(Some(one.clone())),
                    Some(_) => Err(SettingError::new(key, "a client tunnel has one")),
                };
                let client = ClientTunnel {
                    listen,
                    target,
                    unsafe_listen: self.unsafe_listen.unwrap_or(false),
                    servername: self.servername.clone(),
                    tls: ClientTlsSettings {
                        ca: self.ca.clone(),
                        pin: self.pin,
                        cert: one("cert", &self.cert)?,
                        key: one("key", &self.key)?,
                        crl: self.crl.clone(),
                        tls12: self.tls12.unwrap_or(false),
                        pki_dir: self.pki_dir.clone(),
                        keylog: self.keylog.clone(),
                    },
                    verify_cn: self.verify_cn.clone().unwrap_or_default(),
                    verify_dns: self.verify_dns.clone().unwrap_or_default(),
                    verify_uri: self.verify_uri.clone().unwrap_or_default(),
                    verify_spki_pin: self.verify_spki_pin.clone().unwrap_or_default(),
                    connect_timeout: self
                        .connect_timeout
                        .unwrap_or(TunnelOptions::default().connect_timeout),
                    idle_timeout: self
                        .idle_timeout
                        .unwrap_or(defaults.idle_timeout.unwrap_or_default()),
                    max_connections: self.max_connections.unwrap_or(defaults.max_connections),
                    shutdown_timeout: self.shutdown_timeout.unwrap_or(defaults.shutdown_timeout),
                };
                client.check(naming)?;
                TunnelKind::Client(client)
            }
        };
        Ok(TunnelSpec {
            name: self.name.clone(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<TunnelsConfig, ConfigError> {
        TunnelsConfig::parse(Path::new("t.toml"), text)
    }

    const TWO: &str = r#"
metrics = "127.0.0.1:0"

[[tunnel]]
name = "redis"
mode = "server"
listen = ["127.0.0.1:6380"]
target = "127.0.0.1:6379"
cert = ["s.pem"]
key = ["s-key.pem"]
client_ca = "ca.pem"
allow_cn = ["alice"]
proxy_protocol = true
connect_timeout = "5s"

[[tunnel]]
name = "db"
mode = "client"
listen = "127.0.0.1:5432"
target = "localhost:5433"
ca = "ca.pem"
verify_dns = ["localhost"]
"#;

    #[test]
    fn two_tunnels() {
        let config = parsed(TWO).unwrap();
        assert_eq!(config.tunnels.len(), 2);
        let TunnelKind::Server(server) = &config.tunnels[0].kind else {
            panic!("server");
        };
        assert_eq!(server.connect_timeout, Duration::from_secs(5));
        assert!(server.proxy_protocol);
        assert_eq!(server.tls.allow_cn, vec!["alice".to_owned()]);
        let TunnelKind::Client(client) = &config.tunnels[1].kind else {
            panic!("client");
        };
        assert_eq!(client.listen, vec!["127.0.0.1:5432".to_owned()]);
        assert_eq!(client.tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.metrics.as_deref(), Some("127.0.0.1:0"));
    }

    fn error(text: &str) -> String {
        parsed(text).unwrap_err().describe()
    }

    #[test]
    fn errors_name_the_tunnel_the_key_and_the_line() {
        let unknown = error(&TWO.replace("verify_dns", "verify_dnz"));
        assert!(
            unknown.starts_with("t.toml:22:1: tunnel \"db\": key `verify_dnz`: unknown field"),
            "{unknown}"
        );
        let missing = error(&TWO.replace("target = \"localhost:5433\"\n", ""));
        assert!(
            missing.starts_with("t.toml:16: tunnel \"db\": key `target`: is missing"),
            "{missing}"
        );
        let bad = error(&TWO.replace("\"5s\"", "\"5 s of fun\""));
        assert!(
            bad.starts_with("t.toml:14:19: tunnel \"redis\": key `connect_timeout`:"),
            "{bad}"
        );
        let other_mode =
            error(&TWO.replace("ca = \"ca.pem\"\nverify", "allow_cn = [\"x\"]\nverify"));
        assert!(
            other_mode.contains("tunnel \"db\": key `allow_cn`: is a key of mode = \"server\""),
            "{other_mode}"
        );
        let remote = error(&TWO.replace("127.0.0.1:6379", "192.0.2.1:6379"));
        assert!(
            remote.starts_with("t.toml:8: tunnel \"redis\": key `target`:")
                && remote.contains("`unsafe_target`"),
            "{remote}"
        );
        let twice = error(&TWO.replace("name = \"db\"", "name = \"redis\""));
        assert!(twice.contains("key `name`: another tunnel"), "{twice}");
        let same_port = error(&TWO.replace("127.0.0.1:5432", "127.0.0.1:6380"));
        assert!(
            same_port.contains("tunnel \"db\": key `listen`"),
            "{same_port}"
        );
        let syntax = error(&TWO.replace("mode = \"client\"", "mode = client"));
        assert!(syntax.starts_with("t.toml:18:"), "{syntax}");
        let mode = error(&TWO.replace("mode = \"client\"", "mode = \"sideways\""));
        assert!(
            mode.starts_with("t.toml:18:8: tunnel \"db\": key `mode`: unknown variant"),
            "{mode}"
        );
        let no_rule = error(&TWO.replace("allow_cn = [\"alice\"]\n", ""));
        assert!(
            no_rule.contains("key `allow_all`: who may use"),
            "{no_rule}"
        );
    }
}
