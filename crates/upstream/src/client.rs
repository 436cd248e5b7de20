use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use switchyard_core::{BoxError, Failure};
use switchyard_policy::Provider;

use crate::BuildError;
use crate::resolve::GuardedResolver;

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// Process settings of the connection pools (not part of the hot-reloaded policy).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// Connection pools, for the public web roots and per distinct provider CA bundle, each in
/// two kinds: one that refuses names resolving to private addresses and one for providers
/// with `allow_private_network`.
///
/// Pools are keyed by what they trust and where they may connect, not by policy generation,
/// so a policy reload keeps every warm connection.
pub struct Clients {
    config: ClientConfig,
    /// Indexed by `allow_private_network`.
    public: [HttpClient; 2],
    private_ca: Mutex<HashMap<([u8; 32], bool), HttpClient>>,
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Clients {
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        let public = [
            build_client(&config, public_roots(), false)?,
            build_client(&config, public_roots(), true)?,
        ];
        Ok(Self {
            config,
            public,
            private_ca: Mutex::new(HashMap::new()),
        })
    }

    /// The pool whose TLS trusts what this provider's policy says to trust.
    pub(crate) fn for_provider(&self, provider: &Provider) -> Result<HttpClient, BoxError> {
        let allow_private = provider.allow_private_network;
        let Some(pem) = provider.ca_pem.as_deref() else {
            return Ok(self.public[usize::from(allow_private)].clone());
        };
        let key = (Sha256::digest(pem).into(), allow_private);
        // The lock guards a map lookup only; it is never held across an await.
        let mut map = self
            .private_ca
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let mut roots = public_roots();
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                Failure::boxed(BuildError::Ca {
                    provider: provider.id.to_string(),
                    detail: e.to_string(),
                })
            })?;
            roots.add(cert).map_err(|e| {
                Failure::boxed(BuildError::Ca {
                    provider: provider.id.to_string(),
                    detail: e.to_string(),
                })
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Failure::boxed(BuildError::Ca {
                provider: provider.id.to_string(),
                detail: "no certificate in ca_file".into(),
            }));
        }
        let client = build_client(&self.config, roots, allow_private).map_err(Failure::boxed)?;
        map.insert(key, client.clone());
        Ok(client)
    }
}

fn public_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

fn build_client(
    config: &ClientConfig,
    roots: RootCertStore,
    allow_private: bool,
) -> Result<HttpClient, BuildError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(allow_private));
    // base_url decides http vs https; the TLS wrapper below handles the https ones.
    http.enforce_http(false);
    // Without it, small SSE writes wait on delayed ACKs (40 ms-class stalls on fast streams).
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);

    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(https))
}
