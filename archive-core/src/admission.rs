//! Admission of network connections before they have proved anything: caps per host and in
//! total, so that one noisy or hostile address cannot hold every socket the server will take.
//!
//! Trusted hosts (this machine, and for DICOM the hosts of listed peers) have their own
//! per-host allowance and are not counted against the shared total: a flood from unknown
//! addresses never locks out a configured modality. Used by the DICOM listener for connections
//! that are still negotiating and by the HTTP server for every connection.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Refusals are counted always but logged at most this often per listener: a flood must not
/// become a flood of log lines.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Connections at once from all untrusted hosts together.
    pub max_total: usize,
    /// Connections at once from one untrusted host.
    pub max_per_host: usize,
    /// Connections at once from one trusted host.
    pub max_per_trusted_host: usize,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    HostLimit,
    TotalLimit,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HostLimit => "too many connections from this host",
            Refusal::TotalLimit => "too many connections from unlisted hosts",
        }
    }
}

pub struct Admission {
    /// Names the listener in log lines ("dicom", "http").
    listener: &'static str,
    limits: AdmissionLimits,
    trusted: HashSet<IpAddr>,
    trust_loopback: bool,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    untrusted_total: usize,
    per_host: HashMap<IpAddr, usize>,
    refused: u64,
    refused_since_warning: u64,
    last_warning: Option<Instant>,
}

/// Held while an admitted connection lasts; dropping it gives the place back.
pub struct AdmissionPermit {
    admission: Arc<Admission>,
    host: IpAddr,
    trusted: bool,
}

impl Admission {
    pub fn new(
        listener: &'static str,
        limits: AdmissionLimits,
        trusted: impl IntoIterator<Item = IpAddr>,
        trust_loopback: bool,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            listener,
            limits,
            trusted: trusted.into_iter().map(canonical).collect(),
            trust_loopback,
            state: Mutex::new(Counts::default()),
        })
    }

    pub fn is_trusted(&self, host: IpAddr) -> bool {
        let host = canonical(host);
        (self.trust_loopback && host.is_loopback() && is_this_machine(host))
            || self.trusted.contains(&host)
    }

    /// Takes a place for a connection from `host`, or says why there is none.
    pub fn try_admit(self: &Arc<Self>, host: IpAddr) -> Result<AdmissionPermit, Refusal> {
        let host = canonical(host);
        let trusted = self.is_trusted(host);
        let mut counts = self.counts();
        let from_host = counts.per_host.get(&host).copied().unwrap_or(0);
        let refusal = if trusted {
            (from_host >= self.limits.max_per_trusted_host).then_some(Refusal::HostLimit)
        } else if from_host >= self.limits.max_per_host {
            Some(Refusal::HostLimit)
        } else if counts.untrusted_total >= self.limits.max_total {
            Some(Refusal::TotalLimit)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            counts.refused += 1;
            counts.refused_since_warning += 1;
            let now = Instant::now();
            if counts
                .last_warning
                .is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL)
            {
                tracing::warn!(
                    listener = self.listener,
                    peer = %host,
                    reason = refusal.as_str(),
                    refused = counts.refused_since_warning,
                    "connections closed unserved (counted since the last such warning)"
                );
                counts.last_warning = Some(now);
                counts.refused_since_warning = 0;
            }
            return Err(refusal);
        }
        *counts.per_host.entry(host).or_insert(0) += 1;
        if !trusted {
            counts.untrusted_total += 1;
        }
        Ok(AdmissionPermit {
            admission: self.clone(),
            host,
            trusted,
        })
    }

    /// Connections admitted and not yet released.
    pub fn in_use(&self) -> usize {
        self.counts().per_host.values().sum()
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.counts().refused
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: each update is one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, host: IpAddr, trusted: bool) {
        let mut counts = self.counts();
        if let Some(count) = counts.per_host.get_mut(&host) {
            *count -= 1;
            if *count == 0 {
                counts.per_host.remove(&host);
            }
        }
        if !trusted {
            counts.untrusted_total = counts.untrusted_total.saturating_sub(1);
        }
    }
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.admission.release(self.host, self.trusted);
    }
}

/// An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`; count it as `a.b.c.d`.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        v4 => v4,
    }
}

/// 127.0.0.1 and ::1 only: other 127.x addresses are treated as other hosts, as the DICOM AE
/// policy does (which also lets tests play a second host on one machine).
fn is_this_machine(address: IpAddr) -> bool {
    address == IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        || address == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn admission() -> Arc<Admission> {
        Admission::new(
            "test",
            AdmissionLimits {
                max_total: 3,
                max_per_host: 2,
                max_per_trusted_host: 4,
            },
            [ip("10.0.0.7")],
            true,
        )
    }

    #[test]
    fn one_host_cannot_take_more_than_its_share() {
        let admission = admission();
        let first = admission.try_admit(ip("10.9.9.9")).expect("first");
        let _second = admission.try_admit(ip("::ffff:10.9.9.9")).expect("second");
        assert_eq!(
            admission.try_admit(ip("10.9.9.9")).err(),
            Some(Refusal::HostLimit)
        );
        drop(first);
        assert!(admission.try_admit(ip("10.9.9.9")).is_ok());
        assert_eq!(admission.refused(), 1);
    }

    #[test]
    fn trusted_hosts_keep_their_capacity_when_the_total_is_used_up() {
        let admission = admission();
        let _held: Vec<_> = ["10.1.1.1", "10.1.1.1", "10.2.2.2"]
            .iter()
            .map(|host| admission.try_admit(ip(host)).expect("admitted"))
            .collect();
        assert_eq!(
            admission.try_admit(ip("10.3.3.3")).err(),
            Some(Refusal::TotalLimit)
        );
        let listed: Vec<_> = (0..4)
            .map(|_| admission.try_admit(ip("10.0.0.7")).expect("listed peer"))
            .collect();
        assert_eq!(
            admission.try_admit(ip("10.0.0.7")).err(),
            Some(Refusal::HostLimit)
        );
        assert!(admission.try_admit(ip("127.0.0.1")).is_ok());
        assert_eq!(
            admission.try_admit(ip("127.0.0.2")).err(),
            Some(Refusal::TotalLimit),
            "only this machine's own address is trusted, not all of 127/8"
        );
        assert_eq!(admission.in_use(), 3 + listed.len());
    }

    #[test]
    fn loopback_is_untrusted_when_not_configured() {
        let admission = Admission::new(
            "test",
            AdmissionLimits {
                max_total: 1,
                max_per_host: 1,
                max_per_trusted_host: 1,
            },
            [],
            false,
        );
        let _one = admission.try_admit(ip("127.0.0.1")).expect("first");
        assert!(admission.try_admit(ip("::1")).is_err());
    }
}
