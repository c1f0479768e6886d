//! Sign-up attempts per client: a token bucket per IPv4 address or IPv6 /64, so one
//! client cannot list-bomb the sign-up form.
//!
//! Bounded by construction, in memory and in work, whatever the number of addresses a
//! client commands (an IPv6 /48 alone is 65,536 /64s): the table holds at most
//! [`MAX_CLIENTS`] buckets; when it is full, buckets that have refilled are dropped, at
//! most once a second, and a client that still finds no room shares one overflow bucket
//! with every other such client, so a flood of new addresses gets no more than one
//! client's allowance. (governor's keyed limiter grows with its keys until it is pruned,
//! which is this same problem, so it is not used.)

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Clients tracked at once: a few megabytes at most.
pub const MAX_CLIENTS: usize = 65_536;
/// The shortest time between two sweeps of a full table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The key every client without a bucket of its own shares while the table is full (an
/// address no client can have: the unspecified one).
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

pub struct RateLimiter {
    capacity: f64,
    refill_per_second: f64,
    max_clients: usize,
    table: Mutex<Table>,
}

struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Whether the client was told no since its bucket last held a token: only the
    /// first refusal is worth a log line.
    refused: bool,
}

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; `first` when this is the first refusal since the client's last allowed
    /// attempt.
    Refused {
        first: bool,
    },
}

impl RateLimiter {
    /// `limit` attempts per `window`, with bursts of up to `limit`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_CLIENTS)
    }

    fn with_capacity(limit: u32, window: Duration, max_clients: usize) -> Self {
        RateLimiter {
            capacity: f64::from(limit),
            refill_per_second: f64::from(limit) / window.as_secs_f64().max(f64::MIN_POSITIVE),
            max_clients,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Takes one attempt for `client`.
    pub fn try_acquire(&self, client: IpAddr) -> Admission {
        self.try_acquire_at(client, Instant::now())
    }

    fn try_acquire_at(&self, client: IpAddr, now: Instant) -> Admission {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut key = client_key(client);
        if !table.buckets.contains_key(&key) && table.buckets.len() >= self.max_clients {
            self.sweep(&mut table, now);
            if table.buckets.len() >= self.max_clients {
                key = OVERFLOW;
            }
        }
        let capacity = self.capacity;
        let bucket = table.buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            refused: false,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.refill_per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refused = false;
            Admission::Allowed
        } else {
            let first = !bucket.refused;
            bucket.refused = true;
            Admission::Refused { first }
        }
    }

    /// Drops the buckets that have refilled (their clients are as new), at most once
    /// per [`SWEEP_EVERY`], so a full table costs one pass a second at most.
    fn sweep(&self, table: &mut Table, now: Instant) {
        if table
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_EVERY)
        {
            return;
        }
        table.last_sweep = Some(now);
        let (capacity, rate) = (self.capacity, self.refill_per_second);
        table.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens + elapsed * rate < capacity
        });
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.table.lock().unwrap().buckets.len()
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

    fn allowed(admission: Admission) -> bool {
        admission == Admission::Allowed
    }

    #[test]
    fn allows_the_limit_then_refuses_until_refilled() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(allowed(limiter.try_acquire_at(client, start)));
        }
        assert_eq!(
            limiter.try_acquire_at(client, start),
            Admission::Refused { first: true }
        );
        assert_eq!(
            limiter.try_acquire_at(client, start),
            Admission::Refused { first: false },
            "one refusal is news, the next ones are not"
        );
        assert!(allowed(
            limiter.try_acquire_at("203.0.113.8".parse().unwrap(), start)
        ));
        assert!(allowed(
            limiter.try_acquire_at(client, start + Duration::from_secs(20))
        ));
    }

    #[test]
    fn counts_an_ipv6_slash_64_as_one_client() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        let start = Instant::now();
        assert!(allowed(
            limiter.try_acquire_at("2001:db8:1:2::1".parse().unwrap(), start)
        ));
        assert!(!allowed(
            limiter.try_acquire_at("2001:db8:1:2:ffff::9".parse().unwrap(), start)
        ));
        assert!(allowed(
            limiter.try_acquire_at("2001:db8:1:3::1".parse().unwrap(), start)
        ));
    }

    #[test]
    fn a_flood_of_new_addresses_shares_one_allowance_and_the_table_stays_bounded() {
        let limit = 5;
        let limiter = RateLimiter::with_capacity(limit, Duration::from_secs(300), 1_000);
        let start = Instant::now();
        // A /48's worth of /64s, each trying once within the same second.
        let mut allowed_count = 0;
        for n in 0..65_536u32 {
            let address = Ipv6Addr::new(0x2001, 0xdb8, 0x77, n as u16, 0, 0, 0, 1);
            if allowed(limiter.try_acquire_at(IpAddr::V6(address), start)) {
                allowed_count += 1;
            }
            assert!(limiter.clients() <= 1_001, "the table outgrew its bound");
        }
        assert_eq!(
            allowed_count,
            1_000 + limit,
            "a bucket each while there was room, then one shared allowance"
        );
        // A client seen before keeps its own bucket meanwhile, where the overflow's is spent.
        let first = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 9));
        assert!(allowed(limiter.try_acquire_at(first, start)));
        // Once the buckets refill, a sweep makes room for new clients again.
        let later = start + Duration::from_secs(301);
        let newcomer: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(allowed(limiter.try_acquire_at(newcomer, later)));
        assert!(limiter.clients() <= 2, "{} buckets left", limiter.clients());
    }
}
