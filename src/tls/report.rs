//! What a handshake negotiated, for both ends: version, suite, group, ALPN, the peer's chain.

use std::fmt;
use std::time::Duration;

use rustls::CommonState;
use serde::Serialize;

use super::config::is_post_quantum;
use super::identity::PeerIdentity;
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
    /// Who the peer is, from its leaf certificate (`None` when it sent none).
    pub peer: Option<PeerIdentity>,
    /// Summaries of the peer's certificates, leaf first, for people: filled in by
    /// [`HandshakeReport::with_peer_chain`] (the client's report), empty on the server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_chain: Vec<CertSummary>,
}

impl HandshakeReport {
    /// Reads what was negotiated from a finished connection, and the peer's identity.
    pub fn from_state(state: &CommonState, sni: Option<&str>, elapsed: Duration) -> Self {
        let protocol = match state.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        };
        let cipher_suite = state
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown")
            .to_owned();
        let group = state.negotiated_key_exchange_group().map(|g| g.name());
        // The verifier has accepted the chain, so the leaf parses; a failure is kept as "no
        // identity" rather than a panic.
        let peer = state
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| PeerIdentity::from_der(leaf).ok());
        HandshakeReport {
            protocol,
            cipher_suite,
            key_exchange: group
                .map(|g| g.as_str().map_or_else(|| format!("{g:?}"), str::to_owned))
                .unwrap_or_else(|| "none (resumed without key exchange)".into()),
            post_quantum: group.is_some_and(is_post_quantum),
            alpn: state
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            sni: sni.map(str::to_owned),
            resumed: matches!(state.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
            handshake_ms: elapsed.as_secs_f64() * 1000.0,
            peer,
            peer_chain: Vec::new(),
        }
    }

    /// A report for a service run without TLS (over `tokio::io::duplex` in tests), with the
    /// identity the test wants the service to see.
    pub fn in_memory(peer: Option<PeerIdentity>) -> Self {
        HandshakeReport {
            protocol: "none (in memory)".into(),
            cipher_suite: "none".into(),
            key_exchange: "none".into(),
            post_quantum: false,
            alpn: None,
            sni: None,
            resumed: false,
            handshake_ms: 0.0,
            peer,
            peer_chain: Vec::new(),
        }
    }

    /// Adds summaries of every certificate the peer sent (what `tlsnet connect` prints).
    pub fn with_peer_chain(mut self, state: &CommonState) -> Self {
        self.peer_chain = state
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|der| {
                CertSummary::from_der(der)
                    .unwrap_or_else(|e| CertSummary::unparsable(&e.describe()))
            })
            .collect();
        self
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
            None if self.peer.is_some() => {
                if let Some(peer) = &self.peer {
                    writeln!(f, "peer:          {peer}")?;
                }
            }
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
