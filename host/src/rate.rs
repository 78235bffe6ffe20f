//! Token buckets: one per connection (client frames), one per client address (guest
//! logins).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock::Recover;

pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `per_second` a second, bursts up to the same number.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        RateLimit::with_burst(rate, per_second.max(1), Instant::now())
    }

    /// `rate` tokens a second, `burst` at most (and at first).
    pub fn with_burst(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.take(now).is_ok()
    }

    /// Takes a token, or says how long until there is one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// A bucket per client address. A full bucket is the same as none, so full ones are
/// forgotten when the map grows: it holds only addresses seen recently.
pub struct PerAddress {
    rate: f64,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, RateLimit>>,
}

/// Addresses held before full buckets are swept out.
const SWEEP_AT: usize = 4096;

impl PerAddress {
    pub fn new(rate: f64, burst: u32) -> Self {
        PerAddress {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `ip`'s bucket, or says how long until there is one.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().recover();
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(ip)
            .or_insert_with(|| RateLimit::with_burst(self.rate, self.burst, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let limits = PerAddress::new(1.0, 3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.take(a, t0), Ok(()));
        }
        let wait = limits.take(a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert_eq!(
            limits.take(b, t0),
            Ok(()),
            "another address has its own bucket"
        );
        assert_eq!(limits.take(a, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_map_grows() {
        let limits = PerAddress::new(100.0, 1);
        let t0 = Instant::now();
        for i in 0..SWEEP_AT as u32 {
            let _ = limits.take(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(1);
        let _ = limits.take(IpAddr::from([255, 0, 0, 1]), later);
        assert_eq!(limits.buckets.lock().recover().len(), 1);
    }
}
