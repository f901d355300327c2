//! STARTTLS: the plain-text exchange that mail protocols need before TLS starts on the same
//! connection.
//!
//! Responses are read one byte at a time so that nothing the server sends after its "go
//! ahead" is read as plain text: if a server (or someone on the path) sends bytes after that
//! line, they reach the TLS handshake and fail it, instead of being silently taken as part of
//! the protected session.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Longest line accepted from the server.
const MAX_LINE: usize = 4096;
/// Most lines accepted in one (multi-line) response.
const MAX_LINES: usize = 200;

/// A protocol whose connections can be upgraded to TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// SMTP (RFC 3207): `EHLO`, then `STARTTLS`.
    Smtp,
    /// IMAP (RFC 3501): `STARTTLS`.
    Imap,
    /// POP3 (RFC 2595): `STLS`.
    Pop3,
}

impl StartTls {
    /// Every protocol, in the order `--help` lists them.
    pub const ALL: [StartTls; 3] = [StartTls::Smtp, StartTls::Imap, StartTls::Pop3];

    /// The port the protocol usually offers STARTTLS on.
    pub fn default_port(self) -> u16 {
        match self {
            StartTls::Smtp => 587,
            StartTls::Imap => 143,
            StartTls::Pop3 => 110,
        }
    }

    /// Runs the plain-text exchange on a fresh connection, up to the point where the server
    /// expects a TLS ClientHello. Every read is bounded by `timeout`.
    pub async fn negotiate(self, tcp: &mut TcpStream, peer: &str, timeout: Duration) -> Result<()> {
        let mut session = Session {
            tcp,
            peer,
            protocol: self,
            timeout,
        };
        match self {
            StartTls::Smtp => session.smtp().await,
            StartTls::Imap => session.imap().await,
            StartTls::Pop3 => session.pop3().await,
        }
    }
}

impl fmt::Display for StartTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartTls::Smtp => "smtp",
            StartTls::Imap => "imap",
            StartTls::Pop3 => "pop3",
        })
    }
}

impl FromStr for StartTls {
    type Err = crate::error::ParseError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        StartTls::ALL
            .into_iter()
            .find(|p| p.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::error::ParseError::new(format!(
                    "unknown STARTTLS protocol '{s}' (one of: smtp, imap, pop3)"
                ))
            })
    }
}

struct Session<'a> {
    tcp: &'a mut TcpStream,
    peer: &'a str,
    protocol: StartTls,
    timeout: Duration,
}

impl Session<'_> {
    fn refused(&self, what: &str, line: &str) -> Error {
        Error::InvalidInput(format!(
            "{} STARTTLS with {}: {what} (server said: {})",
            self.protocol.to_string().to_uppercase(),
            self.peer,
            printable(line)
        ))
    }

    async fn smtp(&mut self) -> Result<()> {
        let greeting = self.smtp_response().await?;
        if !greeting.starts_with("220") {
            return Err(self.refused("no 220 greeting", &greeting));
        }
        self.send("EHLO tlsnet.invalid\r\n").await?;
        let lines = self.smtp_lines().await?;
        let last = lines.last().cloned().unwrap_or_default();
        if !last.starts_with("250") {
            return Err(self.refused("EHLO was refused", &last));
        }
        let offers = lines.iter().any(|l| {
            l.get(4..)
                .is_some_and(|kw| kw.trim().eq_ignore_ascii_case("STARTTLS"))
        });
        if !offers {
            return Err(self.refused("the server does not offer STARTTLS", &lines.join(" | ")));
        }
        self.send("STARTTLS\r\n").await?;
        let reply = self.smtp_response().await?;
        if !reply.starts_with("220") {
            return Err(self.refused("STARTTLS was refused", &reply));
        }
        Ok(())
    }

    /// Reads an SMTP reply (`250-...` lines up to `250 ...`); returns every line.
    async fn smtp_lines(&mut self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return Ok(lines);
            }
            if lines.len() >= MAX_LINES {
                return Err(self.refused("reply too long", &lines[0]));
            }
        }
    }

    /// Reads an SMTP reply; returns its last line.
    async fn smtp_response(&mut self) -> Result<String> {
        Ok(self.smtp_lines().await?.pop().unwrap_or_default())
    }

    async fn imap(&mut self) -> Result<()> {
        let greeting = self.line().await?;
        if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
            return Err(self.refused("no OK greeting", &greeting));
        }
        self.send("a1 STARTTLS\r\n").await?;
        for _ in 0..MAX_LINES {
            let line = self.line().await?;
            if let Some(status) = line.strip_prefix("a1 ") {
                if status.starts_with("OK") {
                    return Ok(());
                }
                return Err(self.refused("STARTTLS was refused", &line));
            }
        }
        Err(self.refused("no answer to STARTTLS", ""))
    }

    async fn pop3(&mut self) -> Result<()> {
        let greeting = self.line().await?;
        if !greeting.starts_with("+OK") {
            return Err(self.refused("no +OK greeting", &greeting));
        }
        self.send("STLS\r\n").await?;
        let reply = self.line().await?;
        if !reply.starts_with("+OK") {
            return Err(self.refused("STLS was refused", &reply));
        }
        Ok(())
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        let write = async {
            self.tcp.write_all(text.as_bytes()).await?;
            self.tcp.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.network(e)),
            Err(_) => Err(self.network(timed_out())),
        }
    }

    /// Reads one line (without its CR LF), never reading past its end.
    async fn line(&mut self) -> Result<String> {
        let timeout = self.timeout;
        let read = async {
            let mut line = Vec::new();
            loop {
                let byte = self.tcp.read_u8().await?;
                if byte == b'\n' {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(line);
                }
                line.push(byte);
                if line.len() > MAX_LINE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line longer than {MAX_LINE} bytes"),
                    ));
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(line)) => Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(Err(e)) => Err(self.network(e)),
            Err(_) => Err(self.network(timed_out())),
        }
    }

    fn network(&self, error: std::io::Error) -> Error {
        let error = if error.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(
                error.kind(),
                "the server closed the connection during the STARTTLS exchange",
            )
        } else {
            error
        };
        Error::Network {
            action: "STARTTLS with",
            peer: self.peer.to_owned(),
            source: error,
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer in time during the STARTTLS exchange",
    )
}

/// A server's line as safe, short text.
fn printable(line: &str) -> String {
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect();
    if clean.is_empty() {
        "nothing".to_owned()
    } else {
        format!("'{clean}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("smtp".parse::<StartTls>().ok(), Some(StartTls::Smtp));
        assert_eq!("IMAP".parse::<StartTls>().ok(), Some(StartTls::Imap));
        assert_eq!("pop3".parse::<StartTls>().ok(), Some(StartTls::Pop3));
        assert!("ftp"
            .parse::<StartTls>()
            .unwrap_err()
            .to_string()
            .contains("one of"));
    }

    #[test]
    fn cleans_server_text() {
        assert_eq!(printable("502 no\u{1b}[31m"), "'502 no?[31m'");
        assert_eq!(printable(""), "nothing");
    }
}
