//! Many tunnels in one process, from a [`TunnelsConfig`], changed while they run.
//!
//! [`TunnelSet::apply`] compares the running tunnels with a new configuration by name: a
//! tunnel whose settings are the same is left alone (its connections never notice); a new one
//! is started; a removed one stops accepting and its connections drain (for its
//! `shutdown_timeout`, then they are closed); a changed one is both: the old stops, the new
//! starts. Everything the new tunnels need (certificates, keys, listening sockets) is made
//! before anything is stopped, so a configuration that cannot start changes nothing.
//!
//! **Rebinding the same address.** A changed tunnel that listens where it listened before
//! gets the old tunnel's listening socket (a duplicate of its descriptor, kept by the set),
//! not a new one: the old accept loop stops, the new one starts on the same socket, and a
//! client that connects in between waits in the socket's backlog instead of being refused.
//! No `SO_REUSEPORT` (which would let another process of the same user take over the port,
//! and resets the connections queued on a socket that closes). An address that no running
//! tunnel holds is bound anew; one that an unchanged tunnel holds is refused by the kernel.
//!
//! Each tunnel runs in a `tunnel{tunnel=NAME}` span (every log line of it and of its
//! connections carries the name) and shows its counters on the metrics endpoint as
//! `server="NAME"`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use socket2::{SockRef, Socket};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use super::TunnelClient;
use crate::config::settings::nonzero;
use crate::config::tunnel::{ServerTunnel, TunnelKind, TunnelSpec, TunnelsConfig};
use crate::config::Naming;
use crate::error::{Error, Result};
use crate::net::{Server, ServerOptions};
use crate::service::Router;
use crate::telemetry;
use crate::tls::{Reloader, ServerTlsSource, TlsHandle};

/// A tunnel that could not be started: nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("tunnel \"{name}\" cannot start")]
pub struct StartError {
    /// The tunnel.
    pub name: String,
    /// Why.
    #[source]
    pub source: Error,
}

/// What [`TunnelSet::apply`] did, by tunnel name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Started.
    pub added: Vec<String>,
    /// Stopped (their connections drain).
    pub removed: Vec<String>,
    /// Restarted with their new settings.
    pub changed: Vec<String>,
    /// Left alone.
    pub unchanged: Vec<String>,
}

/// The running tunnels.
#[derive(Default)]
pub struct TunnelSet {
    running: BTreeMap<String, Running>,
    /// Every tunnel's task, running or draining.
    tasks: TaskTracker,
}

struct Running {
    spec: TunnelSpec,
    stop: CancellationToken,
    /// Duplicates of the listening sockets, by listen address: for a restart on the same
    /// address.
    sockets: Vec<(String, Vec<Socket>)>,
    /// Asks the server tunnel's TLS reloader to reload now.
    tls_reload: Option<Arc<Notify>>,
}

/// A tunnel ready to run: its TLS material read, its listeners bound.
struct Prepared {
    spec: TunnelSpec,
    kind: PreparedKind,
    listeners: Vec<TcpListener>,
    sockets: Vec<(String, Vec<Socket>)>,
}

// Short-lived: one for each tunnel being started.
#[allow(clippy::large_enum_variant)]
enum PreparedKind {
    Server {
        source: ServerTlsSource,
        tls: Arc<ServerConfig>,
        router: Router,
        options: ServerOptions,
    },
    Client(TunnelClient),
}

impl TunnelSet {
    /// No tunnels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The names of the running tunnels.
    pub fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Makes the running set what `config` says (see the [module](self)).
    pub async fn apply(&mut self, config: &TunnelsConfig) -> Result<Applied, StartError> {
        let mut applied = Applied::default();
        let mut to_start = Vec::new();
        for spec in &config.tunnels {
            match self.running.get(&spec.name) {
                Some(running) if running.spec == *spec => applied.unchanged.push(spec.name.clone()),
                Some(_) => {
                    applied.changed.push(spec.name.clone());
                    to_start.push(spec);
                }
                None => {
                    applied.added.push(spec.name.clone());
                    to_start.push(spec);
                }
            }
        }
        applied.removed = self
            .running
            .keys()
            .filter(|name| !config.tunnels.iter().any(|t| &t.name == *name))
            .cloned()
            .collect();
        let stopping: Vec<&String> = applied.changed.iter().chain(&applied.removed).collect();

        let mut prepared = Vec::new();
        for spec in to_start {
            let ready = self
                .prepare(spec, &stopping)
                .await
                .map_err(|source| StartError {
                    name: spec.name.clone(),
                    source,
                })?;
            prepared.push(ready);
        }
        for name in &stopping {
            if let Some(old) = self.running.remove(*name) {
                old.stop.cancel();
            }
        }
        for name in &applied.removed {
            telemetry::unregister(name);
        }
        for ready in prepared {
            self.start(ready);
        }
        Ok(applied)
    }

    /// Asks every server tunnel to re-read its certificate files now (what SIGHUP does).
    pub fn reload_tls(&self) {
        for running in self.running.values() {
            if let Some(trigger) = &running.tls_reload {
                trigger.notify_one();
            }
        }
    }

    /// Stops every tunnel and waits until their connections have drained (each tunnel for
    /// its `shutdown_timeout` at most).
    pub async fn shutdown(mut self) {
        for (_, running) in std::mem::take(&mut self.running) {
            running.stop.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs the tunnels of `config` (already applied) until `stop`: the file is read again
    /// when `trigger` fires (SIGHUP; the server tunnels re-read their certificates too) and
    /// when its content changes (checked every `reload_interval`). A file that does not load,
    /// or whose tunnels cannot start, is refused with a log line naming the line and key at
    /// fault, and the running tunnels are kept. `metrics`, `log_format` and `reload_interval`
    /// are read at start only.
    pub async fn run(
        mut self,
        config: TunnelsConfig,
        trigger: Arc<Notify>,
        stop: impl Future<Output = ()>,
    ) {
        let path = config.path.clone();
        let mut current = config;
        let stopped = CancellationToken::new();
        let mut watch = crate::watch::Watch::new(
            vec![path.clone()],
            nonzero(current.reload_interval),
            trigger,
        )
        .await;
        tokio::pin!(stop);
        loop {
            let requested = tokio::select! {
                _ = &mut stop => break,
                changed = watch.changed(&stopped) => match changed {
                    Some(requested) => requested,
                    None => break,
                },
            };
            if requested {
                self.reload_tls();
            }
            let file = path.clone();
            let loaded = tokio::task::spawn_blocking(move || TunnelsConfig::load(&file)).await;
            let new = match loaded {
                Ok(Ok(new)) => new,
                Ok(Err(e)) => {
                    warn!(error = %e.describe(), "tunnels file refused; the running tunnels are kept");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "tunnels file not read; the running tunnels are kept");
                    continue;
                }
            };
            if (&new.metrics, new.log_format, new.reload_interval)
                != (
                    &current.metrics,
                    current.log_format,
                    current.reload_interval,
                )
            {
                warn!("metrics, log_format and reload_interval changed: they take effect at the next start");
            }
            match self.apply(&new).await {
                Ok(applied) => {
                    applied.log();
                    current = new;
                }
                Err(e) => {
                    warn!(error = %crate::error::chain(&e), "tunnels file refused; the running tunnels are kept")
                }
            }
        }
        self.shutdown().await;
    }

    async fn prepare(&self, spec: &TunnelSpec, stopping: &[&String]) -> Result<Prepared> {
        let kind = {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || build(&spec))
                .await
                .map_err(|e| Error::unusable("the tunnel's start task", e))??
        };
        let mut listeners = Vec::new();
        let mut sockets = Vec::new();
        for addr in spec.listen() {
            let handed_over = stopping
                .iter()
                .filter_map(|name| self.running.get(*name))
                .flat_map(|r| &r.sockets)
                .find(|(a, _)| a == addr);
            let bound = match handed_over {
                Some((_, held)) => held
                    .iter()
                    .map(|s| s.try_clone().and_then(listener))
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| Error::Network {
                        action: "take over the listener on",
                        peer: addr.clone(),
                        source: e,
                    })?,
                None => crate::net::bind(addr).await?,
            };
            let held = bound
                .iter()
                .map(|l| SockRef::from(l).try_clone())
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| Error::Network {
                    action: "keep the listener on",
                    peer: addr.clone(),
                    source: e,
                })?;
            sockets.push((addr.clone(), held));
            listeners.extend(bound);
        }
        Ok(Prepared {
            spec: spec.clone(),
            kind,
            listeners,
            sockets,
        })
    }

    fn start(&mut self, ready: Prepared) {
        let Prepared {
            spec,
            kind,
            listeners,
            sockets,
        } = ready;
        let name = spec.name.clone();
        let stop = CancellationToken::new();
        let listen = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let span = info_span!("tunnel", tunnel = %name);
        let mut tls_reload = None;
        match (kind, &spec.kind) {
            (
                PreparedKind::Server {
                    source,
                    tls,
                    router,
                    options,
                },
                TunnelKind::Server(server),
            ) => {
                let handle = TlsHandle::new(tls);
                let reloader = Reloader::new(source.clone(), handle.clone())
                    .interval(server.reload_every())
                    .named(name.clone());
                tls_reload = Some(reloader.trigger());
                let tunnel = Server::with_options(handle, router, options);
                telemetry::register(&name, tunnel.stats());
                let stop = stop.clone();
                let target = server.target.to_string();
                let policy = describe_policy(server, &source);
                self.tasks.spawn(
                    async move {
                        info!(mode = "server", %listen, %target, client_auth = source.client_auth.name(), allow = %policy, "tunnel started");
                        let reloading = tokio::spawn(reloader.run(stop.clone()).in_current_span());
                        if let Err(e) = tunnel.run(listeners, stop.cancelled_owned()).await {
                            warn!(error = %e.describe(), "tunnel failed");
                        }
                        let _ = reloading.await;
                        info!("tunnel stopped");
                    }
                    .instrument(span),
                );
            }
            (PreparedKind::Client(client), TunnelKind::Client(settings)) => {
                telemetry::register(&name, client.stats());
                let stop = stop.clone();
                let target = settings.target.clone();
                self.tasks.spawn(
                    async move {
                        info!(mode = "client", %listen, %target, "tunnel started");
                        if let Err(e) = client.run(listeners, stop.cancelled_owned()).await {
                            warn!(error = %e.describe(), "tunnel failed");
                        }
                        info!("tunnel stopped");
                    }
                    .instrument(span),
                );
            }
            // `build` makes the kind of the spec.
            _ => return,
        }
        self.running.insert(
            name,
            Running {
                spec,
                stop,
                sockets,
                tls_reload,
            },
        );
    }
}

/// Reads the tunnel's TLS material and makes what runs it (blocking).
fn build(spec: &TunnelSpec) -> Result<PreparedKind> {
    match &spec.kind {
        TunnelKind::Server(server) => {
            server.check(Naming::Keys)?;
            let (source, _dev_pki) = server.tls.source(Naming::Keys)?;
            let tls = source.build()?;
            Ok(PreparedKind::Server {
                source,
                tls,
                router: server.router(),
                options: server.limits.options()?,
            })
        }
        TunnelKind::Client(client) => Ok(PreparedKind::Client(client.build(Naming::Keys)?)),
    }
}

fn describe_policy(server: &ServerTunnel, source: &ServerTlsSource) -> String {
    if source.policy.is_empty() {
        if server.allow_all {
            "any client the CA signed".to_owned()
        } else {
            "-".to_owned()
        }
    } else {
        source.policy.describe()
    }
}

fn listener(socket: Socket) -> std::io::Result<TcpListener> {
    TcpListener::from_std(std::net::TcpListener::from(socket))
}

impl Applied {
    /// One log line: what was added, removed, changed and left alone.
    pub fn log(&self) {
        let list = |names: &[String]| {
            if names.is_empty() {
                "-".to_owned()
            } else {
                names.join(",")
            }
        };
        info!(
            added = %list(&self.added),
            removed = %list(&self.removed),
            changed = %list(&self.changed),
            unchanged = %list(&self.unchanged),
            "tunnels file applied"
        );
    }
}
