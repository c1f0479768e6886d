//! Sign-up attempts per client: a token bucket per IPv4 address or IPv6 /64, so one
//! client cannot list-bomb the sign-up form.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct RateLimiter {
    capacity: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets kept before idle ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    /// `limit` attempts per `window`, with bursts of up to `limit`.
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            capacity: f64::from(limit),
            refill_per_second: f64::from(limit) / window.as_secs_f64().max(f64::MIN_POSITIVE),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `client`; false when its bucket is empty.
    pub fn try_acquire(&self, client: IpAddr) -> bool {
        self.try_acquire_at(client, Instant::now())
    }

    fn try_acquire_at(&self, client: IpAddr, now: Instant) -> bool {
        let key = client_key(client);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let capacity = self.capacity;
            let rate = self.refill_per_second;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < capacity
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.refill_per_second).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// IPv6 clients usually hold a whole /64: count them together.
fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_until_refilled() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.try_acquire_at(client, start));
        }
        assert!(!limiter.try_acquire_at(client, start));
        assert!(limiter.try_acquire_at("203.0.113.8".parse().unwrap(), start));
        assert!(limiter.try_acquire_at(client, start + Duration::from_secs(20)));
    }

    #[test]
    fn counts_an_ipv6_slash_64_as_one_client() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        let start = Instant::now();
        assert!(limiter.try_acquire_at("2001:db8:1:2::1".parse().unwrap(), start));
        assert!(!limiter.try_acquire_at("2001:db8:1:2:ffff::9".parse().unwrap(), start));
        assert!(limiter.try_acquire_at("2001:db8:1:3::1".parse().unwrap(), start));
    }
}
