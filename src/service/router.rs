//! Several services on one port, chosen by ALPN.
//!
//! The server offers the ALPN ids of every routed service; a client that offers one of them
//! gets that service, a client that offers none (the seeds' Python clients, `openssl
//! s_client`) gets the default service, and a client that offers only ids we do not have is
//! refused by rustls with the alert `no_application_protocol`.

use std::sync::Arc;

use super::Service;

/// Services by ALPN id, with a default for clients that offer none.
#[derive(Clone)]
pub struct Router {
    default: Option<Arc<dyn Service>>,
    routes: Vec<(Vec<u8>, Arc<dyn Service>)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("default", &self.default.as_ref().map(|s| s.name()))
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|(id, s)| (String::from_utf8_lossy(id).into_owned(), s.name()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Router {
    /// `default` for clients without ALPN; add others with [`Router::route`].
    pub fn new(default: Arc<dyn Service>) -> Self {
        Router {
            default: Some(default),
            routes: Vec::new(),
        }
    }

    /// No default: a client must choose a service by ALPN.
    pub fn without_default() -> Self {
        Router {
            default: None,
            routes: Vec::new(),
        }
    }

    /// Routes clients that choose `alpn` to `service`. A later route for the same id
    /// replaces the earlier one.
    pub fn route(mut self, alpn: impl Into<Vec<u8>>, service: Arc<dyn Service>) -> Self {
        let alpn = alpn.into();
        self.routes.retain(|(id, _)| *id != alpn);
        self.routes.push((alpn, service));
        self
    }

    /// The ALPN ids to offer, in the order they were added.
    pub fn protocols(&self) -> Vec<Vec<u8>> {
        self.routes.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The service for a client that chose `alpn` (`None`: it offered no ALPN).
    pub fn pick(&self, alpn: Option<&[u8]>) -> Option<&Arc<dyn Service>> {
        match alpn {
            None => self.default.as_ref(),
            Some(id) => self.routes.iter().find(|(r, _)| r == id).map(|(_, s)| s),
        }
    }

    /// The default service's name, or `-`.
    pub fn default_name(&self) -> &'static str {
        self.default.as_ref().map_or("-", |s| s.name())
    }
}

impl From<Arc<dyn Service>> for Router {
    fn from(service: Arc<dyn Service>) -> Self {
        Router::new(service)
    }
}

impl<S: Service> From<S> for Router {
    fn from(service: S) -> Self {
        Router::new(Arc::new(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Discard, Echo};

    #[test]
    fn picks_by_alpn() {
        let router = Router::new(Arc::new(Echo)).route(&b"tlsnet-discard"[..], Arc::new(Discard));
        assert_eq!(router.pick(None).map(|s| s.name()), Some("echo"));
        assert_eq!(
            router.pick(Some(b"tlsnet-discard")).map(|s| s.name()),
            Some("discard")
        );
        assert!(router.pick(Some(b"h2")).is_none());
        assert_eq!(router.protocols(), [b"tlsnet-discard".to_vec()]);
    }
}
