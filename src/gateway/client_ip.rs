//! Which address a request really comes from.
//!
//! `X-Forwarded-For` is believed only when the peer is a trusted proxy, and then only up to
//! the right-most address that is not itself trusted: everything left of it could have been
//! written by the client. A proxy may send the header on several lines (HAProxy does); they
//! are one list, read from the last line back (RFC 9110 §5.3).

use std::net::IpAddr;

use ipnet::IpNet;

/// The client address for rate limits, logs and `X-Forwarded-For`. `forwarded_for` holds the
/// `X-Forwarded-For` lines in the order they arrived.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut last = peer;
    for hop in forwarded_for.rev().flat_map(|line| line.rsplit(',')) {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => last = ip,
            Some(ip) => return ip,
            // Garbage in the chain: stop believing it and use the last trusted hop.
            None => return last,
        }
    }
    last
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // "[v6]:port" or "v4:port"
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Header lines separated by `|`; `""` is no header at all.
    fn lines(s: &str) -> impl DoubleEndedIterator<Item = &str> {
        s.split('|').filter(|l| !l.is_empty())
    }

    #[test]
    fn lines_are_one_list_read_from_the_last() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(
            ip("10.0.0.1"),
            lines("6.6.6.6|198.51.100.7, 10.0.0.5"),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
        let got = client_ip(ip("10.0.0.1"), lines("198.51.100.7|10.0.0.5"), &trusted);
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn untrusted_peer_cannot_claim_another_address() {
        let got = client_ip(ip("203.0.113.9"), lines("1.2.3.4"), &nets(&["10.0.0.0/8"]));
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(
            ip("10.0.0.1"),
            lines("6.6.6.6, 198.51.100.7, 10.0.0.5"),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        assert_eq!(
            client_ip(ip("10.0.0.1"), lines(""), &nets(&["10.0.0.0/8"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk() {
        let got = client_ip(
            ip("10.0.0.1"),
            lines("1.1.1.1, nonsense"),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn all_trusted_chain_gives_leftmost() {
        let got = client_ip(
            ip("10.0.0.1"),
            lines("10.0.0.9, 10.0.0.8"),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, ip("10.0.0.9"));
    }
}
