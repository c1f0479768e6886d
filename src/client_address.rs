//! Who a request is from: the peer of its connection, or — when that peer is one of the
//! operator's trusted proxies — the client the proxy forwarded it for, read from
//! `X-Forwarded-For` right to left up to the first address that is not a trusted proxy.
//! Anyone else's `X-Forwarded-For` is ignored, so a client cannot choose its own address.
//!
//! Only `X-Forwarded-For` is read, which nginx, HAProxy, Caddy and the cloud load
//! balancers all set. Reading `Forwarded` (RFC 7239) as well would let a client forge the
//! whole chain behind a proxy that sets only the other header.

use std::net::{IpAddr, SocketAddr};

use axum::{extract::ConnectInfo, extract::Request, extract::State, middleware::Next};
use http::HeaderMap;

use crate::settings::TrustedProxies;

/// Hops of a forwarded chain read at most, from the right: the client is within the
/// operator's few proxies, and a longer chain is a client's invention.
const MAX_HOPS: usize = 16;

/// The address a web request is from, as [`resolve`] finds it; every web request carries
/// one in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The client behind `peer`: `peer` itself unless it is a trusted proxy.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for(headers).into_iter().rev().take(MAX_HOPS) {
        match hop {
            Some(address) => {
                client = address;
                if !trusted.contains(address) {
                    break;
                }
            }
            // Past a hop that names no address nothing can be believed.
            None => break,
        }
    }
    client
}

/// The addresses of every `X-Forwarded-For` line, in order, left to right; `None` for an
/// entry that is not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or_default().split(','))
        .map(|entry| parse_hop(entry.trim()))
        .collect()
}

/// An address as proxies write it: bare, or (IPv6) in brackets, either with a port.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address);
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

/// The client of a gRPC call (whose extensions hold its connection's peer), if known.
pub fn of_grpc_call<B>(request: &http::Request<B>, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()?
        .remote_addr()?
        .ip();
    Some(resolve(peer, request.headers(), trusted))
}

/// The client of a gRPC call as a service method receives it, if known.
pub fn of_grpc_request<T>(request: &tonic::Request<T>, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = request.remote_addr()?.ip();
    if !trusted.contains(peer) {
        return Some(peer);
    }
    Some(resolve(
        peer,
        &request.metadata().clone().into_headers(),
        trusted,
    ))
}

/// `axum::middleware::from_fn_with_state` over the web side: puts each request's
/// [`ClientAddress`] in its extensions, for the handlers, the limits and the request's
/// span.
pub async fn web(
    State(trusted): State<std::sync::Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> axum::response::Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    if let Some(peer) = peer {
        let client = resolve(peer, request.headers(), &trusted);
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let forged = headers(&["203.0.113.9"]);
        assert_eq!(
            resolve(ip("198.51.100.4"), &forged, &trusted),
            ip("198.51.100.4")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(resolve(ip("10.0.0.1"), &forged, &nobody), ip("10.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.0.2.1".parse().unwrap();
        // The client forged a first hop; the proxies appended the real ones.
        let chain = headers(&["203.0.113.9, 198.51.100.4", "10.1.2.3"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &chain, &trusted),
            ip("198.51.100.4")
        );
        let ipv6 = headers(&["[2001:db8::7]:4711, 192.0.2.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &ipv6, &trusted), ip("2001:db8::7"));
        // Only proxies all the way: the leftmost is as near the client as can be known.
        let proxies = headers(&["10.9.9.9, 10.8.8.8"]);
        assert_eq!(resolve(ip("10.0.0.1"), &proxies, &trusted), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(
            resolve(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_hop_that_is_not_an_address_stops_the_walk() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let chain = headers(&["203.0.113.9, unknown, 10.2.2.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &chain, &trusted), ip("10.2.2.2"));
        let long = headers(&[&vec!["10.3.3.3"; 1000].join(", ")]);
        assert_eq!(resolve(ip("10.0.0.1"), &long, &trusted), ip("10.3.3.3"));
    }
}
