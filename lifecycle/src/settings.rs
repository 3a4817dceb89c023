//! The lifecycle part of the configuration, in the units the services use.

use archive_core::config::Config;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    pub node_id: String,
    pub workers: u32,
    pub poll_interval: Duration,
    pub lease_ms: i64,
    pub max_attempts: u32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    /// Empty: verify-sync runs only on request.
    pub verify_schedule: String,
    /// Empty: this node scavenges only on request.
    pub scavenge_schedule: String,
    /// Spool and orphan files younger than this are left alone.
    pub scavenge_grace: Duration,
    pub remove_orphans: bool,
    /// Empty: fixity checks run only on request.
    pub fixity_schedule: String,
    pub fixity_cycle_ms: i64,
    pub fixity_max_bytes_per_day: u64,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let life = &config.lifecycle;
        Settings {
            node_id: config.node_id(),
            workers: life.workers,
            poll_interval: Duration::from_millis(life.poll_interval_ms),
            lease_ms: (life.lease_secs as i64).saturating_mul(1000),
            max_attempts: life.max_attempts,
            backoff_base_ms: (life.backoff_base_secs as i64).saturating_mul(1000),
            backoff_max_ms: (life.backoff_max_secs as i64).saturating_mul(1000),
            verify_schedule: life.verify_schedule.clone(),
            scavenge_schedule: life.scavenge_schedule.clone(),
            scavenge_grace: Duration::from_secs(u64::from(life.scavenge_grace_hours) * 3600),
            remove_orphans: life.remove_orphans,
            fixity_schedule: life.fixity_schedule.clone(),
            fixity_cycle_ms: i64::from(life.fixity_cycle_days) * 86_400_000,
            fixity_max_bytes_per_day: life.fixity_max_bytes_per_day.0,
        }
    }

    /// Delay before attempt `attempts + 1`: doubling from the base, capped.
    pub fn backoff_ms(&self, attempts: i64) -> i64 {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.backoff_base_ms
            .saturating_mul(1i64 << doublings)
            .min(self.backoff_max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut config = Config::default();
        config.lifecycle.backoff_base_secs = 2;
        config.lifecycle.backoff_max_secs = 10;
        let settings = Settings::from_config(&config);
        let delays: Vec<i64> = (1..=5).map(|a| settings.backoff_ms(a)).collect();
        assert_eq!(delays, vec![2000, 4000, 8000, 10000, 10000]);
    }
}
