//! What a handshake negotiated, for both ends: version, suite, group, ALPN, the peer's chain.

use std::fmt;
use std::time::Duration;

use rustls::CommonState;
use serde::Serialize;

use crate::tls::is_post_quantum;
use crate::x509::CertSummary;

/// The outcome of a successful handshake.
#[derive(Clone, Debug, Serialize)]
pub struct HandshakeReport {
    /// `TLSv1.3` or `TLSv1.2`.
    pub protocol: String,
    /// IANA name of the cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Key-exchange group, e.g. `X25519MLKEM768`.
    pub key_exchange: String,
    /// Whether the key exchange is post-quantum (hybrid counts).
    pub post_quantum: bool,
    /// The negotiated application protocol, if any.
    pub alpn: Option<String>,
    /// Server name indication sent by the client, if any.
    pub sni: Option<String>,
    /// Whether the session was resumed (no certificate exchange).
    pub resumed: bool,
    /// Wall time of the handshake in milliseconds.
    pub handshake_ms: f64,
    /// The peer's certificates, leaf first (empty when it sent none).
    pub peer_chain: Vec<CertSummary>,
}

impl HandshakeReport {
    /// Reads what was negotiated from a finished connection.
    pub fn from_state(state: &CommonState, sni: Option<&str>, elapsed: Duration) -> Self {
        let protocol = match state.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        };
        let cipher_suite = state
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "unknown".into());
        let group = state.negotiated_key_exchange_group().map(|g| g.name());
        let peer_chain = state
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|der| CertSummary::from_der(der).unwrap_or_else(|e| CertSummary::unparsable(&e)))
            .collect();
        HandshakeReport {
            protocol,
            cipher_suite,
            key_exchange: group
                .map(|g| format!("{g:?}"))
                .unwrap_or_else(|| "none (resumed without key exchange)".into()),
            post_quantum: group.is_some_and(is_post_quantum),
            alpn: state
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            sni: sni.map(str::to_owned),
            resumed: matches!(state.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
            handshake_ms: elapsed.as_secs_f64() * 1000.0,
            peer_chain,
        }
    }

    /// The peer's leaf certificate, if it sent one.
    pub fn peer_leaf(&self) -> Option<&CertSummary> {
        self.peer_chain.first()
    }

    /// The key-exchange group with "(post-quantum hybrid)" where it applies.
    pub fn key_exchange_label(&self) -> String {
        if self.post_quantum {
            format!("{} (post-quantum hybrid)", self.key_exchange)
        } else {
            self.key_exchange.clone()
        }
    }
}

/// The multi-line report `tlsnet connect` prints on stderr.
impl fmt::Display for HandshakeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "protocol:      {}", self.protocol)?;
        writeln!(f, "cipher suite:  {}", self.cipher_suite)?;
        writeln!(f, "key exchange:  {}", self.key_exchange_label())?;
        writeln!(
            f,
            "ALPN:          {}",
            self.alpn.as_deref().unwrap_or("none")
        )?;
        if self.resumed {
            writeln!(f, "session:       resumed")?;
        }
        writeln!(f, "handshake:     {:.1} ms", self.handshake_ms)?;
        match self.peer_leaf() {
            None => writeln!(f, "peer:          sent no certificate")?,
            Some(leaf) => {
                writeln!(f, "peer:          {}", leaf.subject)?;
                if !leaf.subject_alt_names.is_empty() {
                    writeln!(f, "  names:       {}", leaf.subject_alt_names.join(", "))?;
                }
                writeln!(f, "  key:         {}", leaf.key)?;
                writeln!(
                    f,
                    "  expires:     {} ({})",
                    leaf.not_after,
                    days(leaf.days_left)
                )?;
                writeln!(f, "  pin:         {}", leaf.spki_pin)?;
                writeln!(f, "chain:")?;
                for (i, cert) in self.peer_chain.iter().enumerate() {
                    writeln!(
                        f,
                        "  {i}: {}  (issuer: {}; {})",
                        cert.subject,
                        cert.issuer,
                        days(cert.days_left)
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn days(days_left: i64) -> String {
    if days_left < 0 {
        format!("EXPIRED {} days ago", -days_left)
    } else {
        format!("{days_left} days left")
    }
}
