//! Values typed on the command line or read from config: arbitrary bytes as lossy UTF-8
//! through every text parser of the library, with the round trips and safety properties each
//! one promises.

#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::ServerName;
use tlsnet::inspect::starttls::StartTls;
use tlsnet::pki::KeyType;
use tlsnet::tls::SpkiPin;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    pin(text);
    duration(text);
    server_name(text);
    host_port(text);
    certificate_name(text);
    key_type(text);
    local_host(text);
    starttls(text);
});

/// `--pin sha256/...`: a pin parses back from its text.
fn pin(text: &str) {
    if let Ok(pin) = text.parse::<SpkiPin>() {
        let shown = pin.to_string();
        assert_eq!(
            shown.parse::<SpkiPin>().ok(),
            Some(pin),
            "pin {text:?} shown as {shown:?}"
        );
    }
}

/// `--timeout 10s`: what `format` writes reads back as (nearly) the same duration.
fn duration(text: &str) {
    let Ok(d) = tlsnet::duration::parse(text) else {
        return;
    };
    assert!(
        d <= Duration::from_secs(1_000_000_000),
        "{text:?} parsed out of range: {d:?}"
    );
    let shown = tlsnet::duration::format(d);
    let back = tlsnet::duration::parse(&shown).unwrap_or_else(|e| {
        panic!("{text:?} = {d:?} formatted as {shown:?}, which does not parse: {e}")
    });
    assert!(
        back.abs_diff(d) < Duration::from_millis(1),
        "{text:?} = {d:?} formatted as {shown:?}, which parses as {back:?}"
    );
}

/// A server name for SNI: a DNS name or an IP address, that reads back the same.
fn server_name(text: &str) {
    let Ok(name) = tlsnet::tls::server_name(text) else {
        return;
    };
    let shown = match &name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        other => panic!("unexpected server name kind {other:?}"),
    };
    let back = tlsnet::tls::server_name(&shown).unwrap_or_else(|e| {
        panic!("{text:?} = {name:?} shown as {shown:?}, which does not parse: {e}")
    });
    assert_eq!(back, name, "{text:?} shown as {shown:?}");
}

/// `HOST:PORT` and `[v6]:PORT`: the parts, written back the same way, split the same.
fn host_port(text: &str) {
    let Ok((host, port)) = tlsnet::net::client::split_host_port(text) else {
        return;
    };
    assert!(!host.is_empty(), "{text:?} gave an empty host");
    let joined = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let back = tlsnet::net::client::split_host_port(&joined).unwrap_or_else(|e| {
        panic!("{text:?} = ({host:?}, {port}) joined as {joined:?} fails: {e}")
    });
    assert_eq!(back, (host, port), "{text:?} joined as {joined:?}");
}

/// A certificate name becomes a file name in the PKI directory: it must never reach outside.
fn certificate_name(text: &str) {
    if tlsnet::pki::store::check_name(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= 64, "{text:?}");
        assert!(
            !text.contains(['/', '\\', '\0'])
                && text != "."
                && text != ".."
                && !text.starts_with('.'),
            "unsafe certificate name accepted: {text:?}"
        );
        assert!(
            !text.ends_with("-key"),
            "{text:?} would collide with a key file"
        );
    }
}

/// `--key-type`: the names are exactly what `Display` writes.
fn key_type(text: &str) {
    if let Ok(kind) = text.parse::<KeyType>() {
        assert_eq!(kind.to_string(), text);
    }
}

/// `localhost`, 127.0.0.0/8 and `::1`, with or without brackets.
fn local_host(text: &str) {
    let local = tlsnet::pki::dev::is_local_host(text);
    assert_eq!(
        local,
        tlsnet::pki::dev::is_local_host(&format!("[{text}]")),
        "{text:?}"
    );
    if text.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) || text == "localhost" {
        assert!(local, "{text:?} is this machine");
    }
}

/// `--starttls smtp|imap|pop3`.
fn starttls(text: &str) {
    if let Ok(protocol) = text.parse::<StartTls>() {
        assert!(protocol.to_string().eq_ignore_ascii_case(text));
        assert_eq!(
            protocol.to_string().parse::<StartTls>().ok(),
            Some(protocol)
        );
    }
}
