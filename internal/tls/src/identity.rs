//! Names in certificates: a node's identity is the DNS SAN
//! `node-<id>.<cluster>`, and a client's names (CN and DNS SANs) are what the
//! access layer maps to principals.
//!
//! These functions only read certificates; they trust that the handshake has
//! already verified the chain. Never call them on an unverified certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The DNS name node `id` of `cluster` carries in its certificate, e.g.
/// `node-3.chronos`.
pub fn node_name(cluster: &str, id: u64) -> String {
    format!("node-{id}.{cluster}")
}

/// The node id named by a DNS SAN `node-<id>.<cluster>` in the leaf
/// certificate `cert_der`, for exactly this cluster name (compared ASCII
/// case-insensitively, as DNS names are).
///
/// `None` if the certificate does not parse, names no node of `cluster`, or
/// names more than one different node: a certificate that could stand for
/// two nodes identifies neither. Ids are written as [`node_name`] writes
/// them (decimal, no sign, no leading zeros) so each id has one spelling.
pub fn node_id_in(cert_der: &[u8], cluster: &str) -> Option<u64> {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return None;
    };
    let mut found = None;
    for name in dns_sans(&cert) {
        let Some(id) = parse_node_name(name, cluster) else {
            continue;
        };
        match found {
            Some(other) if other != id => return None,
            _ => found = Some(id),
        }
    }
    found
}

/// The subject's common names followed by every DNS SAN of the leaf
/// certificate `cert_der`, in certificate order; empty if it does not parse.
pub fn cert_names(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .collect();
    names.extend(dns_sans(&cert).map(str::to_owned));
    names
}

fn dns_sans<'a>(cert: &'a X509Certificate<'_>) -> impl Iterator<Item = &'a str> {
    // A malformed SAN extension counts as no SANs: the names it might have
    // held cannot be trusted to mean anything.
    let sans = cert.subject_alternative_name().ok().flatten();
    sans.into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
}

fn parse_node_name(name: &str, cluster: &str) -> Option<u64> {
    let rest = name.strip_prefix("node-")?;
    let (id, domain) = rest.split_once('.')?;
    if !domain.eq_ignore_ascii_case(cluster) {
        return None;
    }
    let canonical = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && (id == "0" || !id.starts_with('0'));
    if !canonical {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    #[test]
    fn node_names_parse_back_to_their_id() {
        for id in [0, 3, 42, u64::MAX] {
            assert_eq!(
                parse_node_name(&node_name("chronos", id), "chronos"),
                Some(id)
            );
        }
        assert_eq!(node_name("chronos", 3), "node-3.chronos");
    }

    #[test]
    fn node_names_must_match_the_cluster_and_be_canonical() {
        assert_eq!(parse_node_name("node-2.othercluster", "chronos"), None);
        assert_eq!(parse_node_name("node-2.chronos.example", "chronos"), None);
        assert_eq!(parse_node_name("node-2.CHRONOS", "chronos"), Some(2));
        for bad in [
            "node-.chronos",
            "node-02.chronos",
            "node-+2.chronos",
            "node-x.chronos",
        ] {
            assert_eq!(parse_node_name(bad, "chronos"), None, "{bad}");
        }
        assert_eq!(
            parse_node_name("node-99999999999999999999.chronos", "chronos"),
            None
        );
        assert_eq!(parse_node_name("nodes-2.chronos", "chronos"), None);
    }

    #[test]
    fn node_id_is_read_from_the_san() {
        let ca = TestCa::new("identity test CA");
        let node = ca.issue(&["node-7.chronos", "localhost", "127.0.0.1"]);
        assert_eq!(node_id_in(&node.cert_der, "chronos"), Some(7));
        assert_eq!(node_id_in(&node.cert_der, "other"), None);

        let elsewhere = ca.issue(&["node-2.othercluster"]);
        assert_eq!(node_id_in(&elsewhere.cert_der, "chronos"), None);

        let two_nodes = ca.issue(&["node-1.chronos", "node-2.chronos"]);
        assert_eq!(node_id_in(&two_nodes.cert_der, "chronos"), None);

        assert_eq!(node_id_in(b"not a certificate", "chronos"), None);
    }

    #[test]
    fn cert_names_lists_cn_then_dns_sans() {
        let ca = TestCa::new("identity test CA");
        let client = ca.issue_client("alice", &["alice.clients.chronos", "127.0.0.1"]);
        assert_eq!(
            cert_names(&client.cert_der),
            vec!["alice".to_owned(), "alice.clients.chronos".to_owned()]
        );
        assert!(cert_names(b"garbage").is_empty());
    }
}
