//! `base_url` parsing and the private-address check that keeps a policy from pointing the proxy
//! at the pod's own network unless it says so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::Uri;
use http::uri::{Authority, Scheme};

#[derive(Debug, PartialEq)]
pub(crate) struct BaseUrl {
    pub base_url: String,
    pub https: bool,
    pub authority: Authority,
    pub host: String,
    pub port: u16,
    pub base_path: String,
}

/// Parses a provider `base_url`; the error is a message for the `base_url` field.
pub(crate) fn parse_base_url(raw: &str) -> Result<BaseUrl, String> {
    let trimmed = raw.trim_end_matches('/');
    if raw.contains('#') {
        return Err("must not contain a fragment (#...)".into());
    }
    if !raw.contains("://") {
        return Err(format!(
            "\"{raw}\" is not an absolute URL; write it like https://api.example.com/v1"
        ));
    }
    let uri: Uri = raw
        .parse()
        .map_err(|e| format!("\"{raw}\" is not a valid URL: {e}"))?;
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) => return Err(format!("unsupported scheme \"{s}\"; use http or https")),
        None => {
            return Err(format!(
                "\"{raw}\" is not an absolute URL; write it like https://api.example.com/v1"
            ));
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("\"{raw}\" has no host"));
    };
    if authority.as_str().contains('@') {
        // Credentials belong in api_key, where they are kept out of logs.
        return Err("must not contain user info (user:password@); use api_key".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("\"{raw}\" has no host"));
    }
    if uri.query().is_some() {
        return Err("must not contain a query (?...)".into());
    }
    let port = match authority.port_u16() {
        Some(0) => return Err("port 0 is not a valid port".into()),
        Some(p) => p,
        None if https => 443,
        None => 80,
    };
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(BaseUrl {
        base_url: trimmed.to_owned(),
        https,
        authority,
        host,
        port,
        base_path,
    })
}

/// Whether `host` (lower-case, no brackets) names this machine or a private network:
/// `localhost`, or a loopback, private, link-local, shared (CGNAT), unique-local or unspecified
/// IP literal. Names that merely resolve to such addresses are not detected here.
/// Whether `ip` is a loopback, private (RFC 1918, unique local), link-local, carrier-grade NAT
/// or unspecified address: where a provider may only live with `allow_private_network`.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_private_v4(ip),
        IpAddr::V6(ip) => is_private_v6(ip),
    }
}

pub(crate) fn is_private_host(host: &str) -> bool {
    // Host names are case-insensitive: `LOCALHOST` is localhost too.
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(is_private_ip)
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        // 100.64.0.0/10, carrier-grade NAT; cluster networks often live here.
        || (a == 100 && (64..128).contains(&b))
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_common_base_urls() {
        let u = parse_base_url("https://api.openai.com/v1/").unwrap();
        assert_eq!(u.base_url, "https://api.openai.com/v1");
        assert!(u.https);
        assert_eq!(u.authority.as_str(), "api.openai.com");
        assert_eq!(u.host, "api.openai.com");
        assert_eq!(u.port, 443);
        assert_eq!(u.base_path, "/v1");

        let u = parse_base_url("https://api.anthropic.com").unwrap();
        assert_eq!(u.base_path, "");
        assert_eq!(u.base_url, "https://api.anthropic.com");

        let u = parse_base_url("http://127.0.0.1:8080/openai/v1").unwrap();
        assert!(!u.https);
        assert_eq!(u.authority.as_str(), "127.0.0.1:8080");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.base_path, "/openai/v1");

        let u = parse_base_url("http://example.com").unwrap();
        assert_eq!(u.port, 80);

        let u = parse_base_url("http://[::1]:9000/").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority.as_str(), "[::1]:9000");
        assert_eq!(u.base_url, "http://[::1]:9000");
    }

    #[test]
    fn rejects_bad_base_urls() {
        let cases = [
            ("api.openai.com/v1", "not an absolute URL"),
            ("/v1", "not an absolute URL"),
            ("ftp://example.com", "unsupported scheme"),
            ("https://example.com/v1?x=1", "query"),
            ("https://example.com/v1#frag", "fragment"),
            ("https://user:pw@example.com", "user info"),
            ("https://example.com:0", "port 0"),
            ("https://exa mple.com", "not a valid URL"),
            ("", "not an absolute URL"),
            ("https://", "not a valid URL"),
        ];
        for (url, want) in cases {
            let e = parse_base_url(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn private_hosts() {
        for h in [
            "localhost",
            "api.localhost",
            "localhost.",
            "LOCALHOST",
            "Api.LocalHost",
            "127.0.0.1",
            "127.5.5.5",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private_host(h), "{h}");
        }
        for h in [
            "api.openai.com",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860::8888",
            "::ffff:8.8.8.8",
            "notlocalhost",
        ] {
            assert!(!is_private_host(h), "{h}");
        }
    }
}
