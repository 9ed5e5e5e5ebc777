//! Domain layer: the login limits' decisions (contract sections 3 and 9), written once for
//! every store backend. A backend only fetches, locks and writes counter rows (`Counters`)
//! inside one transaction; `reserve` and `settle` decide.
//!
//! Each limited key (`ip:<rate key>`, `email:<normalised email>`) has two rows:
//! - the failure counter (`key`): failed password checks in the current window, and the
//!   lock (email keys only) set when they reach the threshold;
//! - the held counter (`held:<key>`): attempts that reserved a slot and whose password check
//!   has not been settled yet, in a window of its own (so slots held by a crashed process are
//!   forgotten when that window ends).
//!
//! An attempt is admitted only while failures + held slots stay below the limit, so however
//! many attempts arrive at once no more than the limit are ever checked in one window.

use super::time::Millis;
use super::FailureCounter;

/// One counter a login attempt is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterLimit {
    /// The failure counter's key, e.g. `ip:203.0.113.9` or `email:alice@example.com`.
    pub key: String,
    /// At most this many failed password checks per window (held slots included).
    pub max: u32,
    /// For a counter that locks (the per-email lockout): how long, in milliseconds, once
    /// `max` failures are reached. `None`: refused until the window ends (the per-IP budget).
    pub lock_for: Option<Millis>,
}

impl CounterLimit {
    /// The key of this counter's held-slot row.
    pub fn held_key(&self) -> String {
        format!("held:{}", self.key)
    }
}

/// What one attempt asks for: one slot on every counter, at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    pub now: Millis,
    /// `rate_limit.window` in milliseconds.
    pub window: Millis,
    pub counters: Vec<CounterLimit>,
}

/// One slot an admitted attempt holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSlot {
    pub counter: CounterLimit,
    /// The `window_start` of the held row the slot was taken in: giving the slot back is a
    /// no-op once that window has been replaced.
    pub held_window: Millis,
}

/// The slots an admitted attempt holds until it is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotGrant {
    pub window: Millis,
    pub slots: Vec<HeldSlot>,
}

/// The answer to a `SlotRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A slot was taken on every counter.
    Granted(SlotGrant),
    /// `counters[counter]` had no room; nothing was taken or counted. `retry_at` is when to
    /// try again: the lock's end, the window's end, or (when only attempts still in flight
    /// fill the limit) a second from now.
    Refused { counter: usize, retry_at: Millis },
}

/// Counter rows, read and written inside one transaction that no other reservation or
/// settlement of the same keys can interleave with (each backend's to provide).
pub trait Counters {
    type Error;
    fn get(&mut self, key: &str) -> Result<Option<FailureCounter>, Self::Error>;
    /// Writes the row (insert or replace); a `count` of 0 with no lock may be deleted instead.
    fn put(&mut self, key: &str, counter: FailureCounter) -> Result<(), Self::Error>;
}

/// How long a refusal caused only by attempts still in flight asks the client to wait.
const IN_FLIGHT_RETRY: Millis = 1000;

/// A counter as it stands at `now`: a window that ended counts nothing (and restarts at
/// `now`), a lock that ended is gone.
pub fn current(row: Option<FailureCounter>, now: Millis, window: Millis) -> FailureCounter {
    let mut c = row.unwrap_or(FailureCounter {
        count: 0,
        window_start: now,
        locked_until: None,
    });
    if c.window_start + window <= now {
        c.count = 0;
        c.window_start = now;
    }
    if c.locked_until.is_some_and(|until| until <= now) {
        c.locked_until = None;
    }
    c
}

/// Whether one more attempt fits on `limit`, given its current failures and held slots;
/// `Err(retry_at)` when it does not.
pub fn admit(
    limit: &CounterLimit,
    failures: &FailureCounter,
    held: &FailureCounter,
    now: Millis,
    window: Millis,
) -> Result<(), Millis> {
    if let Some(until) = failures.locked_until.filter(|u| *u > now) {
        return Err(until);
    }
    if failures.count >= limit.max {
        return Err(failures.window_start + window);
    }
    if failures.count.saturating_add(held.count) >= limit.max {
        return Err(now + IN_FLIGHT_RETRY);
    }
    Ok(())
}

/// The failure counter after one more failed check at `now` (starting a window if none is
/// running); a locking counter that reaches its limit is locked for `lock_for` and starts
/// counting afresh.
pub fn after_failure(
    limit: &CounterLimit,
    row: Option<FailureCounter>,
    now: Millis,
    window: Millis,
) -> FailureCounter {
    let mut c = current(row, now, window);
    c.count = c.count.saturating_add(1);
    if let Some(lock_for) = limit.lock_for {
        if c.count >= limit.max {
            return FailureCounter {
                count: 0,
                window_start: now,
                locked_until: Some(now + lock_for),
            };
        }
    }
    c
}

/// Reserves one slot on every counter of `request`, or on none (see `Admission`). The caller
/// runs this inside one transaction.
pub fn reserve<C: Counters>(c: &mut C, request: &SlotRequest) -> Result<Admission, C::Error> {
    let (now, window) = (request.now, request.window);
    let mut held = Vec::with_capacity(request.counters.len());
    for (i, limit) in request.counters.iter().enumerate() {
        let failures = current(c.get(&limit.key)?, now, window);
        let in_flight = current(c.get(&limit.held_key())?, now, window);
        if let Err(retry_at) = admit(limit, &failures, &in_flight, now, window) {
            return Ok(Admission::Refused {
                counter: i,
                retry_at,
            });
        }
        held.push(in_flight);
    }
    let mut slots = Vec::with_capacity(held.len());
    for (limit, h) in request.counters.iter().zip(held) {
        let taken = FailureCounter {
            count: h.count + 1,
            window_start: h.window_start,
            locked_until: None,
        };
        c.put(&limit.held_key(), taken)?;
        slots.push(HeldSlot {
            counter: limit.clone(),
            held_window: h.window_start,
        });
    }
    Ok(Admission::Granted(SlotGrant { window, slots }))
}

/// Gives back every slot of `grant` and, when the password check `failed`, counts one failure
/// on each of its counters (locking those that reach their limit). The caller runs this
/// inside one transaction.
pub fn settle<C: Counters>(
    c: &mut C,
    grant: &SlotGrant,
    failed: bool,
    now: Millis,
) -> Result<(), C::Error> {
    for slot in &grant.slots {
        let key = slot.counter.held_key();
        if let Some(h) = c.get(&key)? {
            // A slot belongs to the window it was taken in; a newer window never held it.
            if h.window_start == slot.held_window && h.count > 0 {
                c.put(
                    &key,
                    FailureCounter {
                        count: h.count - 1,
                        ..h
                    },
                )?;
            }
        }
        if failed {
            let row = c.get(&slot.counter.key)?;
            let next = after_failure(&slot.counter, row, now, grant.window);
            c.put(&slot.counter.key, next)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;

    use super::*;

    #[derive(Default)]
    struct Mem(HashMap<String, FailureCounter>);

    impl Counters for Mem {
        type Error = Infallible;
        fn get(&mut self, key: &str) -> Result<Option<FailureCounter>, Infallible> {
            Ok(self.0.get(key).copied())
        }
        fn put(&mut self, key: &str, counter: FailureCounter) -> Result<(), Infallible> {
            self.0.insert(key.to_string(), counter);
            Ok(())
        }
    }

    const WINDOW: Millis = 60_000;

    fn request(now: Millis) -> SlotRequest {
        SlotRequest {
            now,
            window: WINDOW,
            counters: vec![
                CounterLimit {
                    key: "ip:192.0.2.1".into(),
                    max: 5,
                    lock_for: None,
                },
                CounterLimit {
                    key: "email:a@example.com".into(),
                    max: 3,
                    lock_for: Some(120_000),
                },
            ],
        }
    }

    fn grant(m: &mut Mem, now: Millis) -> Result<SlotGrant, (usize, Millis)> {
        match reserve(m, &request(now)).unwrap() {
            Admission::Granted(g) => Ok(g),
            Admission::Refused { counter, retry_at } => Err((counter, retry_at)),
        }
    }

    #[test]
    fn attempts_in_flight_fill_the_limit_and_a_refusal_counts_nothing() {
        let mut m = Mem::default();
        let held: Vec<_> = (0..3).map(|_| grant(&mut m, 1_000).unwrap()).collect();
        let before = m.0.clone();
        assert_eq!(grant(&mut m, 1_000), Err((1, 2_000)));
        assert_eq!(m.0, before, "a refusal writes nothing");
        // One succeeds: its slot comes back and is taken again.
        settle(&mut m, &held[0], false, 1_100).unwrap();
        let again = grant(&mut m, 1_200).unwrap();
        // Three failures lock the email for two minutes.
        for g in [&held[1], &held[2], &again] {
            settle(&mut m, g, true, 1_300).unwrap();
        }
        assert_eq!(grant(&mut m, 1_400), Err((1, 121_300)));
        assert_eq!(m.0["ip:192.0.2.1"].count, 3);
        assert_eq!(m.0["held:ip:192.0.2.1"].count, 0);
    }

    #[test]
    fn the_ip_budget_is_refused_until_its_window_ends() {
        let mut m = Mem::default();
        let mut req = request(0);
        req.counters[1].max = 1000;
        for _ in 0..5 {
            let Admission::Granted(g) = reserve(&mut m, &req).unwrap() else {
                panic!("admitted")
            };
            settle(&mut m, &g, true, 10).unwrap();
        }
        // The window started at the first failure.
        req.now = 20;
        assert_eq!(
            reserve(&mut m, &req).unwrap(),
            Admission::Refused {
                counter: 0,
                retry_at: WINDOW + 10
            }
        );
        req.now = WINDOW + 10;
        assert!(matches!(
            reserve(&mut m, &req).unwrap(),
            Admission::Granted(_)
        ));
    }

    #[test]
    fn slots_of_an_ended_window_are_forgotten_and_never_given_back_twice() {
        let mut m = Mem::default();
        let stale: Vec<_> = (0..3).map(|_| grant(&mut m, 0).unwrap()).collect();
        // Their process died: the next window starts empty.
        let fresh = grant(&mut m, WINDOW + 1).unwrap();
        // A straggler from the old window gives back nothing of the new one.
        settle(&mut m, &stale[0], false, WINDOW + 2).unwrap();
        assert_eq!(m.0["held:email:a@example.com"].count, 1);
        settle(&mut m, &fresh, false, WINDOW + 3).unwrap();
        assert_eq!(m.0["held:email:a@example.com"].count, 0);
    }
}
