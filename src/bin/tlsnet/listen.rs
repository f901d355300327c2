//! Where a long-running command listens: the sockets systemd passed (socket activation), or
//! else every address of its `--listen` flags.

use anyhow::Result;
use tlsnet::net::bind;
use tlsnet::net::systemd::{self, Notice};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The sockets systemd passed, or else every address `specs` resolve to.
pub async fn listeners(specs: &[String]) -> Result<Vec<TcpListener>> {
    let activated = systemd::activated_listeners()?;
    if !activated.is_empty() {
        let addrs: Vec<String> = activated
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        info!(listen = %addrs.join(", "), "using the sockets systemd passed (socket activation); --listen is not used");
        return Ok(activated);
    }
    let mut listeners = Vec::new();
    for spec in specs {
        listeners.extend(bind(spec).await?);
    }
    Ok(listeners)
}

/// Tells systemd (when it started us with `Type=notify`) what we are doing.
pub fn notify(notice: Notice) {
    if let Err(e) = systemd::notify(notice) {
        warn!(error = %e, ?notice, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
