//! Name resolution for provider connections, with the policy's private-network guard applied
//! to the addresses a name resolves to.
//!
//! The policy refuses a `base_url` whose host is a private, loopback or link-local address
//! unless the provider sets `allow_private_network` — but it can only see literal addresses
//! and `localhost`. A name can still resolve to such an address (a DNS record pointing into
//! the cluster, `/etc/hosts`, or the shorthand forms the system resolver accepts, such as
//! `127.1`). This resolver drops those addresses at connect time, so the guard holds whatever
//! the name resolves to.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use tower::Service;

/// Resolves with the system resolver (`getaddrinfo`, on the blocking pool) and, unless
/// private networks are allowed, keeps only public addresses; a name with none left fails.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    pub(crate) fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }
}

/// Why a name was refused: every address it resolved to is private.
#[derive(Debug)]
struct OnlyPrivate {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl fmt::Display for OnlyPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves only to loopback, private or link-local addresses (",
            self.host
        )?;
        for (i, a) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", a.ip())?;
        }
        f.write_str("); set allow_private_network on the provider to allow it")
    }
}

impl std::error::Error for OnlyPrivate {}

/// The addresses a connection may use: all of them when private networks are allowed,
/// otherwise the public ones, and an error naming the host when none is public.
fn admit(
    host: &str,
    addrs: Vec<SocketAddr>,
    allow_private: bool,
) -> io::Result<std::vec::IntoIter<SocketAddr>> {
    if allow_private {
        return Ok(addrs.into_iter());
    }
    let (public, private): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
        .into_iter()
        .partition(|a| !switchyard_policy::is_private_ip(a.ip()));
    if public.is_empty() && !private.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            OnlyPrivate {
                host: host.to_owned(),
                addrs: private,
            },
        ));
    }
    Ok(public.into_iter())
}

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is the connector's to set; 0 only satisfies the lookup's signature.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            admit(&host, addrs, allow_private)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::str::FromStr;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| SocketAddr::from_str(a).unwrap())
            .collect()
    }

    #[test]
    fn private_addresses_are_dropped_unless_allowed() {
        let mixed = addrs(&[
            "10.0.0.7:0",
            "93.184.215.14:0",
            "[fd00::1]:0",
            "[2606:4700::1]:0",
        ]);
        let kept: Vec<SocketAddr> = admit("api.example.com", mixed.clone(), false)
            .unwrap()
            .collect();
        assert_eq!(kept, addrs(&["93.184.215.14:0", "[2606:4700::1]:0"]));
        let all: Vec<SocketAddr> = admit("api.example.com", mixed.clone(), true)
            .unwrap()
            .collect();
        assert_eq!(all, mixed);

        for private in [
            "127.0.0.1:0",
            "10.1.2.3:0",
            "172.16.0.1:0",
            "192.168.1.1:0",
            "169.254.169.254:0",
            "100.64.0.1:0",
            "0.0.0.0:0",
            "[::1]:0",
            "[fe80::1]:0",
            "[::ffff:10.0.0.1]:0",
        ] {
            let err = admit("internal.example", addrs(&[private]), false).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{private}");
            let msg = err.to_string();
            assert!(msg.contains("internal.example"), "{msg}");
            assert!(msg.contains("allow_private_network"), "{msg}");
            assert!(admit("internal.example", addrs(&[private]), true).is_ok());
        }
        // Nothing resolved is the resolver's own answer, not ours to change.
        assert_eq!(admit("x", Vec::new(), false).unwrap().count(), 0);
    }

    /// `localhost` is resolved by the system (from /etc/hosts), so this needs no network.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let name = Name::from_str("localhost").unwrap();
        let err = GuardedResolver::new(false)
            .call(name.clone())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("localhost resolves only to"),
            "{err}"
        );
        let ok: Vec<SocketAddr> = GuardedResolver::new(true)
            .call(name)
            .await
            .unwrap()
            .collect();
        assert!(
            !ok.is_empty() && ok.iter().all(|a| a.ip().is_loopback()),
            "{ok:?}"
        );
    }
}
