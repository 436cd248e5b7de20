//! The listener: one task per TCP connection served by hyper-util's auto builder (HTTP/1.1 and
//! h2c), with a duplicate of each socket kept so a `reset` fault can end it with a real RST.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{SockRef, Socket};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

use crate::handler::{Handler, Shared};

/// How long a stopping sim lets in-flight responses finish before it drops them; a stalled
/// stream would otherwise hold the stop forever.
const GRACE: Duration = Duration::from_secs(1);

/// Per-connection state the handler needs to fault the connection itself.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    /// A second descriptor of the same socket, outside hyper's reach.
    dup: Mutex<Option<Socket>>,
    reset: Notify,
    closed: watch::Sender<bool>,
}

impl ConnCtx {
    fn new(dup: Option<Socket>) -> Self {
        Self {
            dup: Mutex::new(dup),
            reset: Notify::new(),
            closed: watch::Sender::new(false),
        }
    }

    /// Arms SO_LINGER 0 and asks the connection task to close both descriptors: the kernel
    /// then sends RST instead of FIN.
    pub(crate) fn reset(&self) {
        if let Some(socket) = self
            .dup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && let Err(err) = socket.set_linger(Some(Duration::ZERO))
        {
            tracing::debug!(%err, "sim: SO_LINGER 0 failed; the reset becomes a close");
        }
        self.reset.notify_one();
    }

    /// Resolves once the connection is gone.
    pub(crate) async fn closed(&self) {
        let mut closed = self.closed.subscribe();
        // An error means the sender is gone, which also means closed.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    fn close(&self) {
        drop(
            self.dup
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        self.closed.send_replace(true);
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts until `stop` fires (or its sender is dropped), then stops gracefully.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let task = connection(tcp, &builder, &graceful, shared.clone());
                    connections.spawn(task);
                }
                Err(err) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::debug!(%err, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("sim: grace period over, dropping open connections");
    }
    connections.shutdown().await;
}

fn connection(
    tcp: TcpStream,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send + 'static {
    let open = OpenGuard::new(shared.clone());
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(%err, "sim: TCP_NODELAY failed");
    }
    let dup = SockRef::from(&tcp).try_clone().ok();
    let conn = Arc::new(ConnCtx::new(dup));
    let handler = Handler {
        shared,
        conn: conn.clone(),
    };
    let service = service_fn(move |request| handler.clone().handle(request));
    let served = builder
        .serve_connection(TokioIo::new(tcp), service)
        .into_owned();
    let watched = graceful.watch(served);
    async move {
        let _open = open;
        tokio::select! {
            result = watched => {
                if let Err(err) = result {
                    tracing::trace!(%err, "sim: connection ended with an error");
                }
            }
            () = conn.reset.notified() => {}
        }
        // hyper's descriptor is closed by now; closing the duplicate is the last close,
        // which sends the RST when a reset armed SO_LINGER 0.
        conn.close();
    }
}
