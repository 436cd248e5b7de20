//! The listeners: the proxy (HTTP/1.1 and h2c) and the admin port, with graceful drain.
//!
//! On shutdown the proxy stops accepting at once, `/readyz` turns not-ready, and requests in
//! flight — streams included — run to completion, bounded by the drain timeout. The admin
//! listener stays up until the drain is over, so probes can watch it happen.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use switchyard_policy_watch::PolicyStore;
use switchyard_stack::Registries;
use switchyard_upstream::{ClientConfig, Clients, Upstream};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::observe::{Observability, Observe};

/// Process settings of a running proxy.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_timeout: Duration,
}

/// State shared by the listeners and the admin endpoints.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<PolicyStore>,
    pub registries: Registries,
    pub obs: Observability,
    pub draining: AtomicBool,
}

impl Shared {
    /// Re-reads the policy file; on success, drops the long-lived state of endpoints the new
    /// policy no longer has (unchanged ids keep theirs). A refused reload changes nothing.
    pub fn reload(&self) -> Result<u64, Vec<switchyard_policy::Diagnostic>> {
        match self.store.reload() {
            Ok(generation) => {
                self.registries.reconcile(&self.store.load());
                self.obs.metrics.policy_reloaded(generation);
                Ok(generation)
            }
            Err(e) => {
                self.obs.metrics.policy_reload_failed();
                Err(e)
            }
        }
    }
}

/// A running proxy; [`Running::shutdown`] drains it.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop_proxy: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    drain_timeout: Duration,
}

/// Binds both listeners and starts serving. Fails only if a socket cannot be bound or the TLS
/// client cannot be built; the policy has been validated before this is called.
pub async fn start(
    store: Arc<PolicyStore>,
    registries: Registries,
    obs: Observability,
    cfg: &ServerConfig,
) -> io::Result<Running> {
    let registries = registries
        .with_observer(obs.metrics.clone())
        .with_observer(obs.generations.clone());
    let snapshot = store.load();
    let limits = snapshot.defaults().limits;
    let client_cfg = ClientConfig {
        connect_timeout: snapshot.defaults().timeouts.connect,
        ..ClientConfig::default()
    };
    let clients = Clients::new(client_cfg).map_err(|e| io::Error::other(e.to_string()))?;
    let proxy = switchyard_stack::proxy::<Incoming>(
        store.clone(),
        &registries,
        Upstream::new(Arc::new(clients)),
    );
    // Outermost: spans, request metrics and the generation record see every request whole.
    let proxy = tower::util::BoxCloneService::new(Observe::new(proxy, obs.clone()));

    let proxy_listener = TcpListener::bind(cfg.listen).await?;
    let admin_listener = TcpListener::bind(cfg.admin).await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let shared = Arc::new(Shared {
        store,
        registries,
        obs,
        draining: AtomicBool::new(false),
    });
    // Separate stops: the admin port keeps answering probes while the proxy drains.
    let (stop_proxy, stop_proxy_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());

    let proxy_task = tokio::spawn(accept_loop(
        proxy_listener,
        builder.clone(),
        proxy,
        stop_proxy_rx,
    ));
    let admin_svc = admin::service(shared.clone());
    let admin_task = tokio::spawn(accept_loop(
        admin_listener,
        builder,
        admin_svc,
        stop_admin_rx,
    ));

    tracing::info!(%proxy_addr, %admin_addr, "switchyard listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        shared,
        stop_proxy,
        stop_admin,
        proxy_task,
        admin_task,
        drain_timeout: cfg.drain_timeout,
    })
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to the drain timeout), then stops the
    /// admin listener. Returns false if the drain timed out with requests still running.
    pub async fn shutdown(self) -> bool {
        self.shared.draining.store(true, Ordering::SeqCst);
        let _ = self.stop_proxy.send(true);
        let drained = tokio::time::timeout(self.drain_timeout, self.proxy_task)
            .await
            .is_ok();
        if !drained {
            tracing::warn!(timeout = ?self.drain_timeout, "drain timed out; closing remaining connections");
        }
        let _ = self.stop_admin.send(true);
        // Admin requests are instant; a short bound keeps a stuck probe from holding exit.
        let mut admin_task = self.admin_task;
        if tokio::time::timeout(Duration::from_secs(1), &mut admin_task)
            .await
            .is_err()
        {
            admin_task.abort();
        }
        drained
    }
}

async fn accept_loop<S>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    svc: S,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<switchyard_core::ProxyBody>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small SSE writes must not wait for delayed ACKs.
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc.clone()))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
