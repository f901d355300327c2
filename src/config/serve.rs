//! `tlsnet serve --config FILE`: every flag of `serve` as a key (`_` for `-`). Keys left out
//! keep the flag's default; a flag given on the command line wins over the key (the
//! command merges them, see `tlsnet serve --help`).
//!
//! ```toml
//! listen = ["[::]:8443"]
//! cert = ["/etc/tlsnet/server.pem"]
//! key = ["/etc/tlsnet/server-key.pem"]
//! client_ca = "/etc/tlsnet/client-ca.pem"
//! allow_ou = ["ops"]
//! metrics = "9090"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{de, parse, read, ConfigError, LogFormat, ServerLimits, ServerTlsSettings};
use crate::msg::store::SyncMode;
use crate::service::user::UserIdSource;
use crate::tls::{ClientAuth, KeyLogTarget, Pattern, SpkiPin};

/// Declares a struct with the keys every TLS server has (`tlsnet serve`, a server tunnel)
/// and the given others, and the methods that turn them into the library's settings. Serde
/// cannot deny unknown keys through `#[serde(flatten)]`, hence one macro instead of a shared
/// struct.
macro_rules! with_server_keys {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// `listen`: addresses to listen on.
            #[serde(default, deserialize_with = "de::strings")]
            pub listen: Option<Vec<String>>,
            /// `cert`: certificate chains.
            #[serde(default, deserialize_with = "de::paths")]
            pub cert: Option<Vec<PathBuf>>,
            /// `key`: their keys.
            #[serde(default, deserialize_with = "de::paths")]
            pub key: Option<Vec<PathBuf>>,
            /// `client_ca`.
            pub client_ca: Option<PathBuf>,
            /// `client_auth`: `required`, `optional` or `none`.
            #[serde(default, deserialize_with = "de::client_auth")]
            pub client_auth: Option<ClientAuth>,
            /// `crl`.
            pub crl: Option<PathBuf>,
            /// `allow_cn`.
            #[serde(default, deserialize_with = "de::strings")]
            pub allow_cn: Option<Vec<String>>,
            /// `allow_ou`.
            #[serde(default, deserialize_with = "de::strings")]
            pub allow_ou: Option<Vec<String>>,
            /// `allow_dns`.
            #[serde(default, deserialize_with = "de::dns_patterns")]
            pub allow_dns: Option<Vec<Pattern>>,
            /// `allow_uri`.
            #[serde(default, deserialize_with = "de::uri_patterns")]
            pub allow_uri: Option<Vec<Pattern>>,
            /// `allow_spki_pin`.
            #[serde(default, deserialize_with = "de::pins")]
            pub allow_spki_pin: Option<Vec<SpkiPin>>,
            /// `reload_interval`: how often the certificate files are checked.
            #[serde(default, deserialize_with = "de::duration")]
            pub reload_interval: Option<Duration>,
            /// `tls12`.
            pub tls12: Option<bool>,
            /// `ktls`: try kernel TLS for the data path.
            pub ktls: Option<bool>,
            /// `pki_dir`.
            pub pki_dir: Option<PathBuf>,
            /// `keylog`: a file, or `env`.
            #[serde(default, deserialize_with = "de::keylog")]
            pub keylog: Option<KeyLogTarget>,
            /// `alpn`.
            #[serde(default, deserialize_with = "de::strings")]
            pub alpn: Option<Vec<String>>,
            /// `max_connections`.
            pub max_connections: Option<usize>,
            /// `handshake_timeout`.
            #[serde(default, deserialize_with = "de::duration")]
            pub handshake_timeout: Option<Duration>,
            /// `idle_timeout`.
            #[serde(default, deserialize_with = "de::duration")]
            pub idle_timeout: Option<Duration>,
            /// `shutdown_timeout`.
            #[serde(default, deserialize_with = "de::duration")]
            pub shutdown_timeout: Option<Duration>,
        }

        impl $name {
            /// The TLS settings these keys give (what is left out: the flags' defaults).
            pub fn server_tls(&self) -> ServerTlsSettings {
                ServerTlsSettings {
                    cert: self.cert.clone().unwrap_or_default(),
                    key: self.key.clone().unwrap_or_default(),
                    client_ca: self.client_ca.clone(),
                    client_auth: self.client_auth,
                    crl: self.crl.clone(),
                    allow_cn: self.allow_cn.clone().unwrap_or_default(),
                    allow_ou: self.allow_ou.clone().unwrap_or_default(),
                    allow_dns: self.allow_dns.clone().unwrap_or_default(),
                    allow_uri: self.allow_uri.clone().unwrap_or_default(),
                    allow_spki_pin: self.allow_spki_pin.clone().unwrap_or_default(),
                    tls12: self.tls12.unwrap_or(false),
                    ktls: self.ktls.unwrap_or(false),
                    pki_dir: self.pki_dir.clone(),
                    keylog: self.keylog.clone(),
                }
            }

            /// The limits these keys give.
            pub fn server_limits(&self) -> ServerLimits {
                let d = ServerLimits::default();
                ServerLimits {
                    max_connections: self.max_connections.unwrap_or(d.max_connections),
                    handshake_timeout: self.handshake_timeout.unwrap_or(d.handshake_timeout),
                    idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout),
                    shutdown_timeout: self.shutdown_timeout.unwrap_or(d.shutdown_timeout),
                }
            }
        }
    };
}

pub(crate) use with_server_keys;

/// The service of `serve` (`service`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Send every byte back.
    Echo,
    /// Read and drop every byte.
    Discard,
}

with_server_keys! {
    /// A `tlsnet serve` configuration file: every key is optional.
    #[derive(Clone, Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServeFile {
        /// `service`: `echo` or `discard`.
        pub service: Option<ServiceKind>,
        /// `metrics`: the metrics endpoint's address.
        pub metrics: Option<String>,
        /// `log_format`: `human` or `json`.
        pub log_format: Option<LogFormat>,
        /// `user_id`: `cn`, `email`, `dns` or `uri`.
        #[serde(default, deserialize_with = "de::user_id")]
        pub user_id: Option<UserIdSource>,
        /// `no_msg`: do not run the msg service.
        pub no_msg: Option<bool>,
        /// `store`: the message store's directory, or `nats://HOST:PORT,...`.
        pub store: Option<PathBuf>,
        /// `nats_ca`: CA certificates of the NATS servers (PEM).
        pub nats_ca: Option<PathBuf>,
        /// `nats_cert`: this node's client certificate for NATS (PEM).
        pub nats_cert: Option<PathBuf>,
        /// `nats_key`: its private key (PEM).
        pub nats_key: Option<PathBuf>,
        /// `nats_replicas`: replicas of the NATS streams and buckets.
        pub nats_replicas: Option<u8>,
        /// `sync`: `always` or `batch`.
        #[serde(default, deserialize_with = "de::sync")]
        pub sync: Option<SyncMode>,
        /// `max_message_size`: bytes.
        pub max_message_size: Option<u32>,
        /// `rate_limit`: messages per second and user.
        pub rate_limit: Option<f64>,
        /// `rate_burst`: messages at once before the rate applies.
        pub rate_burst: Option<u32>,
        /// `max_queue`: messages waiting for one recipient.
        pub max_queue: Option<u64>,
        /// `no_files`: do not run the files service.
        pub no_files: Option<bool>,
        /// `files_root`: where every user's space is.
        pub files_root: Option<PathBuf>,
        /// `quota`: bytes per user (`"10G"` or a number).
        #[serde(default, deserialize_with = "de::size")]
        pub quota: Option<u64>,
        /// `max_file_size`: bytes per file (`"4G"` or a number).
        #[serde(default, deserialize_with = "de::size")]
        pub max_file_size: Option<u64>,
        /// `partial_ttl`: how long an untouched partial upload is kept (`"7d"`).
        #[serde(default, deserialize_with = "de::duration")]
        pub partial_ttl: Option<Duration>,
    }
}

impl ServeFile {
    /// Reads and parses `path` (blocking).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        parse(path, text, |_| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<ServeFile, ConfigError> {
        ServeFile::parse(Path::new("serve.toml"), text)
    }

    #[test]
    fn every_kind_of_key() {
        let file = parsed(
            "listen = [\"127.0.0.1:1\", \"[::1]:1\"]\ncert = \"a.pem\"\nkey = [\"a-key.pem\"]\n\
             client_ca = \"ca.pem\"\nclient_auth = \"optional\"\nallow_dns = [\"*.acme\"]\n\
             idle_timeout = \"1m\"\nshutdown_timeout = 5\nservice = \"discard\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(file.listen.as_ref().unwrap().len(), 2);
        assert_eq!(file.cert, Some(vec![PathBuf::from("a.pem")]));
        assert_eq!(file.client_auth, Some(ClientAuth::Optional));
        assert_eq!(file.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(file.shutdown_timeout, Some(Duration::from_secs(5)));
        assert_eq!(file.service, Some(ServiceKind::Discard));
        assert_eq!(file.log_format, Some(LogFormat::Json));
        let tls = file.server_tls();
        assert_eq!(tls.key, vec![PathBuf::from("a-key.pem")]);
        assert_eq!(file.server_limits().idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parsed("listen = [\"x:1\"]\n\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        let text = e.describe();
        assert!(
            text.starts_with("serve.toml:3:1: key `bogus`: unknown field `bogus`"),
            "{text}"
        );
        let e = parsed("idle_timeout = \"5 parsecs\"\n").unwrap_err();
        assert!(
            e.describe().contains("key `idle_timeout`"),
            "{}",
            e.describe()
        );
        assert!(e.describe().contains("unknown unit"), "{}", e.describe());
        let e = parsed("tls12 = \"yes\"\n").unwrap_err();
        assert!(
            e.describe().starts_with("serve.toml:1:9: key `tls12`"),
            "{}",
            e.describe()
        );
        let e = parsed("listen = [\"x:1\"\n").unwrap_err();
        assert_eq!(e.line(), Some(1), "{}", e.describe());
        let e = parsed("client_auth = \"sometimes\"\n").unwrap_err();
        assert!(
            e.describe().contains("required, optional or none"),
            "{}",
            e.describe()
        );
    }
}
