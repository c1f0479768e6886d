//! How fast email goes out: at most `delivery.max_rate` a second and `delivery.quota`
//! a window, for all lanes of a process and all processes on one database, and slower
//! for a while whenever the server says it is sending too fast.
//!
//! Every send takes a turn first. With a rate, turns are slots `1 / max_rate` apart,
//! reserved from the database a few at a time so that replicas share them; a ring of
//! this process's last second of turns keeps any one-second window at the limit even
//! when a slot comes late. A throttling reply adds a pause between turns that doubles
//! with each one and halves with each email accepted, so the sender backs off at once
//! and recovers over a few emails. When the quota is spent, a turn is refused until
//! the oldest send in the window leaves it.
//!
//! (governor, the maintained rate-limiting crate, limits one process only; the slots
//! shared through the database are what makes the limit hold across replicas.)

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use crate::{
    outbox::EMAIL_CHANNEL,
    settings::DeliverySettings,
    store::{Store, StoreError},
};

/// The pause after the first throttling reply, and the longest it grows to.
const PENALTY_FIRST: Duration = Duration::from_millis(50);
const PENALTY_MAX: Duration = Duration::from_secs(2);
/// A pause this short is over.
const PENALTY_FLOOR: Duration = Duration::from_millis(5);
/// Slots reserved from the database at a time: about this long of sending.
const RESERVATION_SPAN: Duration = Duration::from_millis(100);
/// How long a count of the quota's window is trusted before it is read again.
const QUOTA_RECOUNT: Duration = Duration::from_secs(1);
const ONE_SECOND: Duration = Duration::from_secs(1);

/// When a send may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// At this moment (now or later).
    At(SystemTime),
    /// Not before this moment: the quota is spent until then.
    QuotaSpentUntil(SystemTime),
}

pub struct SendPace {
    store: Arc<Store>,
    paced: bool,
    max_rate: u32,
    quota: Option<(u64, Duration)>,
    turns: tokio::sync::Mutex<Turns>,
    pause: Mutex<ThrottlePause>,
}

/// The pause between sends that throttling replies add.
#[derive(Debug, Default, Clone, Copy)]
struct ThrottlePause(Duration);

impl ThrottlePause {
    fn after_throttle(&mut self) {
        self.0 = (self.0 * 2).clamp(PENALTY_FIRST, PENALTY_MAX);
    }

    fn after_accept(&mut self) {
        self.0 /= 2;
        if self.0 < PENALTY_FLOOR {
            self.0 = Duration::ZERO;
        }
    }
}

#[derive(Default)]
struct Turns {
    /// Slots reserved from the database and not used yet.
    reserved: VecDeque<SystemTime>,
    /// This process's turns within the last second, oldest first.
    recent: VecDeque<SystemTime>,
    last: Option<SystemTime>,
    /// The quota's window as last counted: sends in it, and when that was.
    counted: Option<QuotaCount>,
}

struct QuotaCount {
    at: SystemTime,
    /// Sends recorded in the window when counted.
    recorded: u64,
    /// Turns given since.
    turns_since: u64,
    /// When the first send counted leaves the window.
    frees_at: Option<SystemTime>,
}

impl SendPace {
    pub fn new(store: Arc<Store>, settings: &DeliverySettings) -> Self {
        SendPace {
            store,
            paced: settings.is_paced(),
            max_rate: settings.max_rate,
            quota: (settings.quota > 0).then_some((settings.quota, settings.quota_window.0)),
            turns: tokio::sync::Mutex::new(Turns::default()),
            pause: Mutex::new(ThrottlePause::default()),
        }
    }

    fn pause(&self) -> std::sync::MutexGuard<'_, ThrottlePause> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a rate or quota limits sending (see [`DeliverySettings::is_paced`]).
    pub fn is_paced(&self) -> bool {
        self.paced
    }

    /// The server asked us to slow down: pause longer between sends. Returns whether
    /// this starts a slow-down (no pause was on).
    pub fn throttled(&self) -> bool {
        let mut pause = self.pause();
        let starts = pause.0.is_zero();
        pause.after_throttle();
        starts
    }

    /// The server took an email: pause less.
    pub fn accepted(&self) {
        self.pause().after_accept();
    }

    /// Takes the next turn to send, given in order of asking.
    pub async fn take_turn(&self) -> Result<Turn, StoreError> {
        let penalty = self.pause().0;
        if self.max_rate == 0 && self.quota.is_none() && penalty.is_zero() {
            return Ok(Turn::At(SystemTime::now()));
        }
        let mut turns = self.turns.lock().await;
        let now = SystemTime::now();
        if let Some(until) = self.quota_spent_until(&mut turns, now).await? {
            return Ok(Turn::QuotaSpentUntil(until));
        }
        let mut at = now;
        if let Some(last) = turns.last {
            at = at.max(last + penalty);
        }
        if self.max_rate > 0 {
            at = at.max(self.next_slot(&mut turns, now).await?);
            while turns
                .recent
                .front()
                .is_some_and(|&sent| sent + ONE_SECOND <= at)
            {
                turns.recent.pop_front();
            }
            if turns.recent.len() >= self.max_rate as usize
                && let Some(&oldest) = turns.recent.front()
            {
                at = at.max(oldest + ONE_SECOND);
                turns.recent.pop_front();
            }
            turns.recent.push_back(at);
        }
        turns.last = Some(at);
        if let Some(count) = &mut turns.counted {
            count.turns_since += 1;
        }
        Ok(Turn::At(at))
    }

    /// The next reserved slot not already past, reserving more when none is left.
    async fn next_slot(
        &self,
        turns: &mut Turns,
        now: SystemTime,
    ) -> Result<SystemTime, StoreError> {
        let interval = ONE_SECOND / self.max_rate;
        while let Some(slot) = turns.reserved.pop_front() {
            // A slot left over from a pause is not used: sending at it now would bunch
            // it up with the slots reserved next.
            if slot + interval > now {
                return Ok(slot);
            }
        }
        let count = (RESERVATION_SPAN.as_micros() / interval.as_micros().max(1)).max(1);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let first = self
            .store
            .reserve_send_slots(EMAIL_CHANNEL, now, interval, count)
            .await?;
        turns
            .reserved
            .extend((1..count).map(|slot| first + interval * slot));
        Ok(first)
    }

    /// When the quota is spent, the moment a send in its window leaves it. Counted from
    /// what was recorded as sent, plus the turns given since; a count that says "spent"
    /// only because of those turns is taken again, since their sends are recorded by now
    /// or failed. (Sends in flight in other lanes are not counted: the quota can be
    /// passed by at most one email per lane.)
    async fn quota_spent_until(
        &self,
        turns: &mut Turns,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let Some((quota, window)) = self.quota else {
            return Ok(None);
        };
        let stale = turns.counted.as_ref().is_none_or(|count| {
            now.duration_since(count.at).unwrap_or_default() >= QUOTA_RECOUNT
                || count.frees_at.is_some_and(|frees| frees <= now)
                || (count.recorded + count.turns_since >= quota && count.turns_since > 0)
        });
        if stale {
            let since = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
            let (recorded, first) = self.store.sent_since(EMAIL_CHANNEL, since).await?;
            turns.counted = Some(QuotaCount {
                at: now,
                recorded,
                turns_since: 0,
                frees_at: first.map(|first| first + window),
            });
        }
        let count = turns.counted.as_ref().expect("counted above");
        if count.recorded + count.turns_since < quota {
            return Ok(None);
        }
        Ok(Some(count.frees_at.unwrap_or(now + QUOTA_RECOUNT).max(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_doubles_the_pause_up_to_its_cap_and_acceptance_halves_it_away() {
        let mut pause = ThrottlePause::default();
        pause.after_throttle();
        assert_eq!(pause.0, PENALTY_FIRST);
        pause.after_throttle();
        assert_eq!(pause.0, PENALTY_FIRST * 2);
        for _ in 0..10 {
            pause.after_throttle();
        }
        assert_eq!(pause.0, PENALTY_MAX);
        let mut accepted = 0;
        while !pause.0.is_zero() {
            pause.after_accept();
            accepted += 1;
        }
        // 2 s halved to below 5 ms: nine emails taken back to full speed.
        assert_eq!(accepted, 9);
    }
}
