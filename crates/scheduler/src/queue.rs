//! The scheduling queue, after upstream's: an active queue (highest priority first,
//! then FIFO), a backoff queue (pods that failed recently wait 1 s, doubling per
//! attempt up to 10 s) and an unschedulable set (pods that fit nowhere wait for a
//! cluster change, or at most five minutes).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Initial backoff after a failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Maximum backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits without cluster changes before a retry.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable(Instant),
    InFlight,
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    priority: i32,
    attempts: u32,
    place: Place,
    backoff_until: Instant,
    seq: u64,
    /// A cluster change or update arrived while the pod was being scheduled.
    moved_in_flight: bool,
}

/// A queue of pods waiting to be scheduled, keyed by `namespace/name`.
#[derive(Debug)]
pub struct SchedulingQueue<T> {
    entries: HashMap<String, Entry<T>>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
}

impl<T> Default for SchedulingQueue<T> {
    fn default() -> Self {
        SchedulingQueue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            seq: 0,
        }
    }
}

/// The backoff after `attempts` failed attempts.
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

impl<T> SchedulingQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Active;
            e.seq = self.seq;
            self.active
                .push((e.priority, Reverse(self.seq), key.to_string()));
        }
    }

    fn push_backoff(&mut self, key: &str) {
        self.seq += 1;
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Backoff;
            e.seq = self.seq;
            self.backoff
                .push(Reverse((e.backoff_until, self.seq, key.to_string())));
        }
    }

    /// Add a new pending pod, or update a queued one. An update of an unschedulable
    /// pod moves it to the active (or, while backing off, the backoff) queue.
    pub fn add(&mut self, key: &str, item: T, priority: i32, now: Instant) {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        item,
                        priority,
                        attempts: 0,
                        place: Place::Active,
                        backoff_until: now,
                        seq: 0,
                        moved_in_flight: false,
                    },
                );
                self.push_active(key);
            }
            Some(e) => {
                e.item = item;
                e.priority = priority;
                match e.place {
                    Place::Unschedulable(_) => self.move_one(key, now),
                    Place::InFlight => e.moved_in_flight = true,
                    Place::Active | Place::Backoff => {}
                }
            }
        }
    }

    fn move_one(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        if e.backoff_until > now {
            self.push_backoff(key);
        } else {
            self.push_active(key);
        }
    }

    /// Move backoff pods whose time has come, and pods unschedulable for too long.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((t, seq, _))) = self.backoff.peek() {
            if *t > now {
                break;
            }
            let (seq, key) = (*seq, {
                let Some(Reverse((_, _, k))) = self.backoff.pop() else {
                    break;
                };
                k
            });
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.place == Place::Backoff)
            {
                self.push_active(&key);
            }
        }
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.place, Place::Unschedulable(since) if now.duration_since(since) >= MAX_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.move_one(&k, now);
        }
    }

    /// Take the next pod to schedule (it is then in flight until [`Self::done`],
    /// [`Self::unschedulable`], [`Self::backoff`] or [`Self::delete`]).
    pub fn pop(&mut self, now: Instant) -> Option<(String, &T)>
    where
        T: Clone,
    {
        self.flush(now);
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.seq != seq || e.place != Place::Active {
                continue;
            }
            e.place = Place::InFlight;
            e.attempts += 1;
            e.moved_in_flight = false;
            let e = &self.entries[&key];
            return Some((key, &e.item));
        }
        None
    }

    /// The pod was scheduled: forget it.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The pod is gone (deleted, or bound by someone else).
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The pod fits no node: park it until the cluster changes (or, if it already
    /// changed while the pod was being scheduled, back off and retry).
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.backoff_until = now + backoff_duration(e.attempts);
        if e.moved_in_flight {
            e.moved_in_flight = false;
            self.push_backoff(key);
        } else {
            e.place = Place::Unschedulable(now);
        }
    }

    /// The attempt failed for another reason (binding error): retry after backoff.
    pub fn backoff(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.backoff_until = now + backoff_duration(e.attempts.max(1));
        e.moved_in_flight = false;
        self.push_backoff(key);
    }

    /// Something changed in the cluster (node added or updated, pod deleted...):
    /// move every unschedulable pod to the active or backoff queue.
    pub fn move_all(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .entries
            .iter_mut()
            .filter_map(|(k, e)| match e.place {
                Place::Unschedulable(_) => Some(k.clone()),
                Place::InFlight => {
                    e.moved_in_flight = true;
                    None
                }
                _ => None,
            })
            .collect();
        for k in keys {
            self.move_one(&k, now);
        }
    }

    /// When the next backoff ends, if any pod is backing off.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The queued item, if any.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.entries.get(key).map(|e| &e.item)
    }

    /// Replace a queued item without moving it between sub-queues (an update that
    /// cannot change the scheduling outcome, such as a status change).
    pub fn update_item(&mut self, key: &str, item: T) {
        if let Some(e) = self.entries.get_mut(key) {
            e.item = item;
        }
    }

    /// Whether the pod is queued (in any sub-queue or in flight).
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Number of pods by state: (active, backoff, unschedulable, in flight).
    pub fn stats(&self) -> (usize, usize, usize, usize) {
        let mut s = (0, 0, 0, 0);
        for e in self.entries.values() {
            match e.place {
                Place::Active => s.0 += 1,
                Place::Backoff => s.1 += 1,
                Place::Unschedulable(_) => s.2 += 1,
                Place::InFlight => s.3 += 1,
            }
        }
        s
    }

    /// Number of queued pods.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no pod is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("a", 1, 0, now);
        q.add("b", 2, 10, now);
        q.add("c", 3, 0, now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now).map(|(k, _)| k)).collect();
        assert_eq!(order, vec!["b", "a", "c"]);
        assert_eq!(q.stats(), (0, 0, 0, 3));
    }

    #[test]
    fn backoff_durations() {
        assert_eq!(backoff_duration(1), Duration::from_secs(1));
        assert_eq!(backoff_duration(2), Duration::from_secs(2));
        assert_eq!(backoff_duration(4), Duration::from_secs(8));
        assert_eq!(backoff_duration(9), MAX_BACKOFF);
    }

    #[test]
    fn unschedulable_waits_for_cluster_change_then_backs_off() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("p", (), 0, t0);
        assert!(q.pop(t0).is_some());
        q.unschedulable("p", t0);
        assert_eq!(q.stats(), (0, 0, 1, 0));
        assert!(q.pop(t0 + Duration::from_secs(30)).is_none());
        // A cluster change during backoff sends it to the backoff queue...
        q.move_all(t0 + Duration::from_millis(100));
        assert_eq!(q.stats(), (0, 1, 0, 0));
        assert!(q.pop(t0 + Duration::from_millis(500)).is_none());
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        // ...and it is retried once the backoff ends.
        assert!(q.pop(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn change_during_flight_is_not_lost() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("p", (), 0, t0);
        q.pop(t0);
        q.move_all(t0);
        q.unschedulable("p", t0);
        assert_eq!(q.stats(), (0, 1, 0, 0));
    }

    #[test]
    fn stale_unschedulable_pods_are_retried() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("p", (), 0, t0);
        q.pop(t0);
        q.unschedulable("p", t0);
        assert!(q.pop(t0 + MAX_UNSCHEDULABLE).is_some());
    }

    #[test]
    fn update_moves_unschedulable_and_delete_forgets() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("p", 1, 0, t0);
        q.pop(t0);
        q.unschedulable("p", t0);
        q.add("p", 2, 0, t0 + Duration::from_secs(5));
        let (_, v) = q.pop(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(*v, 2);
        q.delete("p");
        assert!(q.is_empty());
    }

    #[test]
    fn update_item_keeps_place() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("p", 1, 0, t0);
        q.pop(t0);
        q.unschedulable("p", t0);
        q.update_item("p", 5);
        assert_eq!(q.get("p"), Some(&5));
        assert_eq!(q.stats(), (0, 0, 1, 0));
    }
}
