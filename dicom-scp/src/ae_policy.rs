//! Who may open an association: the called AE title must be ours; the calling AE title must be
//! in the configured list and connect from its listed host, or — by default — be unknown but
//! connect from this machine.
//!
//! dicom-ul's `AccessControl` sees only AE titles, so a policy value is made per connection
//! with the peer's address in it; a refusal becomes a proper A-ASSOCIATE-RJ.

use archive_core::config::AllowedPeer;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct AePolicy {
    pub peers: Arc<Vec<AllowedPeer>>,
    pub accept_unknown_from_local: bool,
}

/// Only the host's own loopback addresses count as local. Other 127.x addresses are treated
/// as remote, which is also what lets tests play a second host on one machine.
pub fn is_local(address: IpAddr) -> bool {
    address == IpAddr::V4(Ipv4Addr::LOCALHOST)
        || address == IpAddr::V6(Ipv6Addr::LOCALHOST)
        || matches!(address, IpAddr::V6(v6) if v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST))
}

impl AePolicy {
    pub fn for_peer(&self, address: IpAddr) -> PeerAccess {
        PeerAccess {
            policy: self.clone(),
            address,
        }
    }

    /// The addresses of listed peers (not `*`): their connections keep their own capacity
    /// while unlisted hosts flood the listener.
    pub fn listed_hosts(&self) -> Vec<IpAddr> {
        self.peers
            .iter()
            .filter_map(|peer| peer.host.parse().ok())
            .collect()
    }

    /// Why `calling_ae` from `address` is refused, or `None` when it may connect.
    pub fn refusal(&self, calling_ae: &str, address: IpAddr) -> Option<&'static str> {
        let calling_ae = calling_ae.trim();
        let mut listed = self
            .peers
            .iter()
            .filter(|peer| peer.ae_title.trim() == calling_ae)
            .peekable();
        if listed.peek().is_some() {
            let host_matches = listed.any(|peer| {
                peer.host == "*"
                    || peer
                        .host
                        .parse::<IpAddr>()
                        .map(|ip| same_host(ip, address))
                        .unwrap_or(false)
            });
            return (!host_matches).then_some("calling AE title is not allowed from this host");
        }
        if self.accept_unknown_from_local && is_local(address) {
            None
        } else {
            Some("calling AE title is not configured")
        }
    }
}

fn same_host(configured: IpAddr, actual: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canonical(configured) == canonical(actual)
}

/// The policy applied to one connection.
pub struct PeerAccess {
    policy: AePolicy,
    address: IpAddr,
}

impl AccessControl for PeerAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            tracing::info!(calling_ae = calling_ae_title.trim(), called_ae = called_ae_title.trim(), peer = %self.address, "association rejected: called AE title is not ours");
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        match self.policy.refusal(calling_ae_title, self.address) {
            None => Ok(()),
            Some(reason) => {
                tracing::info!(calling_ae = calling_ae_title.trim(), peer = %self.address, reason, "association rejected");
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(accept_unknown: bool) -> AePolicy {
        AePolicy {
            peers: Arc::new(vec![
                AllowedPeer {
                    ae_title: "CT1".into(),
                    host: "127.0.0.1".into(),
                },
                AllowedPeer {
                    ae_title: "ANYWHERE".into(),
                    host: "*".into(),
                },
            ]),
            accept_unknown_from_local: accept_unknown,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn listed_ae_only_from_its_host() {
        let p = policy(true);
        assert_eq!(p.refusal("CT1", ip("127.0.0.1")), None);
        assert_eq!(p.refusal("CT1 ", ip("::ffff:127.0.0.1")), None);
        assert!(p.refusal("CT1", ip("127.0.0.2")).is_some());
        assert_eq!(p.refusal("ANYWHERE", ip("10.1.2.3")), None);
    }

    #[test]
    fn unknown_ae_only_from_this_machine_by_default() {
        assert_eq!(policy(true).refusal("WHO", ip("127.0.0.1")), None);
        assert_eq!(policy(true).refusal("WHO", ip("::1")), None);
        assert!(policy(true).refusal("WHO", ip("127.0.0.2")).is_some());
        assert!(policy(true).refusal("WHO", ip("192.168.1.5")).is_some());
        assert!(policy(false).refusal("WHO", ip("127.0.0.1")).is_some());
    }

    #[test]
    fn called_ae_must_be_ours() {
        let access = policy(true).for_peer(ip("127.0.0.1"));
        assert!(access.check_access("STRATA", "CT1", "STRATA", None).is_ok());
        assert_eq!(
            access.check_access("STRATA", "CT1", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
    }
}
