//! The read-ahead: deliveries read off the broker wait here for a
//! concurrency slot, each tenant in a line of its own, and the slots go round
//! the tenants with work waiting, each tenant holding at most its cap of them
//! (`worker.tenant_concurrency`, or `max_concurrency` in its settings).
//!
//! So a tenant that floods the queue fills the read-ahead, not the slots: the
//! next tenant's message, read behind the flood, takes the next free slot, and
//! the flood's messages in flight stay few enough that the process answers
//! every one of them promptly. The order of one tenant's deliveries is kept
//! (a conversation's messages are one tenant's), and each one's place in its
//! conversation's line is taken as it is read (`Dedup::join`), so that no
//! process answers a later message of the conversation first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;
use uuid::Uuid;

/// Deliveries waiting for a slot, by tenant, and the slots each tenant holds.
pub(super) struct Fair<T> {
    tenants: HashMap<Uuid, Tenant<T>>,
    /// This process's deliveries out (in flight, or waiting for their turn), by conversation.
    out: HashMap<u64, Arc<AtomicUsize>>,
    /// Counts the deliveries that stopped being out (see `Tenant::looked_in_vain`).
    settled: Arc<AtomicU64>,
    /// Deliveries waiting, by conversation (see [`KEEP_BACK`]).
    queued: HashMap<u64, usize>,
    out_prune_at: usize,
    /// Tenants with deliveries waiting, in the order they get the next slot.
    ring: VecDeque<Uuid>,
    waiting: usize,
    /// Told whenever a tenant's slot is given back.
    freed: Arc<Notify>,
}

struct Tenant<T> {
    /// Each delivery with its conversation (none for one that cannot be read).
    queue: VecDeque<(Option<u64>, T)>,
    taken: Arc<AtomicUsize>,
    /// Unknown until its settings are read: nothing of it goes out before.
    cap: Option<usize>,
    /// One delivery of a conversation out at a time (unless the tenant
    /// coalesces bursts: a burst's next message must reach its claim while
    /// the one before is answered).
    one_at_a_time: bool,
    /// `settled` as it was when a look down this line found every delivery's
    /// conversation out: nothing can go until another one settles (or one
    /// joins within reach), so the line is not looked down again before.
    looked_in_vain: Option<u64>,
}

/// How far into a tenant's line the next delivery is looked for, past the
/// ones whose conversation has one out already.
const LOOK_PAST: usize = 64;

/// The most deliveries of one conversation kept back in the read-ahead while
/// one of it is out: past that (a customer, or a gateway looping on one,
/// sending faster than the answers come), they go out as they come, to wait
/// for their turn or be parked back to the queue, rather than hold the
/// prefetch, and the tenant's other conversations behind them, for minutes.
const KEEP_BACK: usize = 32;

impl<T> Default for Fair<T> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            out: HashMap::new(),
            settled: Arc::default(),
            queued: HashMap::new(),
            out_prune_at: 4096,
            ring: VecDeque::new(),
            waiting: 0,
            freed: Arc::new(Notify::new()),
        }
    }
}

impl<T> Fair<T> {
    /// Past this many tenants known, the idle ones (nothing waiting, no slot
    /// out, held or handed back) are forgotten.
    const PRUNE_AT: usize = 1024;

    /// Deliveries waiting.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Told whenever a tenant gives a slot back (one may have room again).
    pub(super) fn freed(&self) -> Arc<Notify> {
        self.freed.clone()
    }

    /// Whether a delivery of `tenant` would be given a slot at once: its cap
    /// is known, none of its deliveries waits, and it holds fewer slots than that.
    pub(super) fn has_room(&self, tenant: Uuid, conversation: Option<u64>) -> bool {
        self.tenants.get(&tenant).is_some_and(|t| {
            t.queue.is_empty()
                && t.cap.is_some_and(|cap| t.taken.load(Ordering::Relaxed) < cap)
                && !(t.one_at_a_time && self.is_out(conversation))
        })
    }

    fn is_out(&self, conversation: Option<u64>) -> bool {
        conversation.and_then(|c| self.out.get(&c)).is_some_and(|n| n.load(Ordering::SeqCst) > 0)
    }

    /// The most slots `tenant` may hold, and whether its conversations go one delivery at a time.
    pub(super) fn set_cap(&mut self, tenant: Uuid, cap: usize, one_at_a_time: bool) {
        let t = self.tenant(tenant);
        t.cap = Some(cap.max(1));
        t.one_at_a_time = one_at_a_time;
    }

    /// Puts `item` (of `conversation`) at the back of `tenant`'s line.
    pub(super) fn push(&mut self, tenant: Uuid, conversation: Option<u64>, item: T) {
        let deep = conversation.is_some_and(|c| {
            let n = self.queued.entry(c).or_default();
            *n += 1;
            *n == KEEP_BACK + 1
        });
        let t = self.tenant(tenant);
        let was_empty = t.queue.is_empty();
        t.queue.push_back((conversation, item));
        // Within reach of a look, or making one within reach go (too many kept back).
        if t.queue.len() <= LOOK_PAST || deep {
            t.looked_in_vain = None;
        }
        if was_empty {
            self.ring.push_back(tenant);
        }
        self.waiting += 1;
    }

    fn tenant(&mut self, tenant: Uuid) -> &mut Tenant<T> {
        if self.tenants.len() >= Self::PRUNE_AT && !self.tenants.contains_key(&tenant) {
            // A slot out (held, or handed back while its delivery waits) holds the counter.
            self.tenants.retain(|_, t| !t.queue.is_empty() || Arc::strong_count(&t.taken) > 1);
        }
        self.tenants.entry(tenant).or_insert_with(|| Tenant {
            queue: VecDeque::new(),
            taken: Arc::new(AtomicUsize::new(0)),
            cap: None,
            one_at_a_time: true,
            looked_in_vain: None,
        })
    }

    /// A hold on `conversation` for a delivery going out now.
    fn hold(&mut self, conversation: Option<u64>) -> Option<OutSlot> {
        let conversation = conversation?;
        if self.out.len() >= self.out_prune_at && !self.out.contains_key(&conversation) {
            self.out.retain(|_, n| Arc::strong_count(n) > 1);
            // All still out: prune again only once as many more came.
            self.out_prune_at = (self.out.len() * 2).max(Self::PRUNE_AT * 4);
        }
        let n = self.out.entry(conversation).or_default().clone();
        n.fetch_add(1, Ordering::Relaxed);
        Some(OutSlot { n, settled: self.settled.clone(), freed: self.freed.clone() })
    }

    /// The next delivery to get a slot: the first tenant in turn that has
    /// room takes one (and goes to the back of the turn). `ignore_caps`
    /// hands out whatever waits (to be parked: the responder is down).
    pub(super) fn pop(&mut self, ignore_caps: bool) -> Option<(T, TenantSlot)> {
        for _ in 0..self.ring.len() {
            let tenant = self.ring.pop_front()?;
            let Some(t) = self.tenants.get(&tenant) else { continue };
            let room = t.cap.is_some_and(|cap| t.taken.load(Ordering::Relaxed) < cap);
            // Read before the look: one settling during it makes the next look again.
            let settled = self.settled.load(Ordering::SeqCst);
            // The first delivery whose conversation has none out (or the first, caps ignored).
            let next = if ignore_caps {
                Some(0)
            } else if !room || (t.one_at_a_time && t.looked_in_vain == Some(settled)) {
                None
            } else if t.one_at_a_time {
                // A conversation seen out stays out for the rest of the look:
                // its delivery may settle meanwhile (another thread), and its
                // later one must not then go before the earlier one just passed.
                let mut passed: Vec<u64> = Vec::new();
                t.queue.iter().take(LOOK_PAST).position(|(conversation, _)| {
                    let Some(c) = *conversation else { return true };
                    if self.queued.get(&c).is_some_and(|n| *n > KEEP_BACK) {
                        return true;
                    }
                    if passed.contains(&c) {
                        return false;
                    }
                    let out = self.is_out(Some(c));
                    if out {
                        passed.push(c);
                    }
                    !out
                })
            } else {
                Some(0)
            };
            let Some(t) = self.tenants.get_mut(&tenant) else { continue };
            let Some((conversation, item)) = next.and_then(|i| t.queue.remove(i)) else {
                if room && t.one_at_a_time && !ignore_caps {
                    t.looked_in_vain = Some(settled);
                }
                if !t.queue.is_empty() {
                    self.ring.push_back(tenant);
                }
                continue;
            };
            if !t.queue.is_empty() {
                self.ring.push_back(tenant);
            }
            self.waiting -= 1;
            let taken = t.taken.clone();
            self.unqueue(conversation);
            let out = self.hold(conversation);
            return Some((item, TenantSlot::take(taken, self.freed.clone(), out)));
        }
        None
    }

    fn unqueue(&mut self, conversation: Option<u64>) {
        if let Some(c) = conversation
            && let Some(n) = self.queued.get_mut(&c)
        {
            *n -= 1;
            if *n == 0 {
                self.queued.remove(&c);
            }
        }
    }

    /// The slot of a delivery given one at once ([`Self::has_room`]).
    pub(super) fn slot_now(&mut self, tenant: Uuid, conversation: Option<u64>) -> TenantSlot {
        let taken = self.tenant(tenant).taken.clone();
        let out = self.hold(conversation);
        TenantSlot::take(taken, self.freed.clone(), out)
    }

    /// Takes out, from the front of each tenant's line, the deliveries `old`
    /// says have waited too long.
    pub(super) fn take_old(&mut self, old: impl Fn(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        for t in self.tenants.values_mut() {
            while t.queue.front().is_some_and(|(_, item)| old(item)) {
                let Some((conversation, item)) = t.queue.pop_front() else { break };
                taken.push((conversation, item));
                // What was out of reach may be within it now.
                t.looked_in_vain = None;
            }
        }
        self.waiting -= taken.len();
        let tenants = &self.tenants;
        self.ring.retain(|tenant| tenants.get(tenant).is_some_and(|t| !t.queue.is_empty()));
        taken
            .into_iter()
            .map(|(conversation, item)| {
                self.unqueue(conversation);
                item
            })
            .collect()
    }

    /// Everything still waiting, taken out (the session is over: the broker
    /// has these deliveries back once the channel closes).
    pub(super) fn drain(&mut self) -> Vec<T> {
        self.ring.clear();
        self.waiting = 0;
        self.queued.clear();
        self.tenants.values_mut().flat_map(|t| t.queue.drain(..).map(|(_, item)| item)).collect()
    }
}

/// A delivery of its conversation being worked on: the conversation's next
/// delivery in the read-ahead waits until it is settled, or waits for its turn.
struct OutSlot {
    n: Arc<AtomicUsize>,
    settled: Arc<AtomicU64>,
    freed: Arc<Notify>,
}

impl Drop for OutSlot {
    fn drop(&mut self) {
        self.n.fetch_sub(1, Ordering::SeqCst);
        self.settled.fetch_add(1, Ordering::SeqCst);
        self.freed.notify_one();
    }
}

/// One of a tenant's slots, held while its delivery is worked on; given back
/// while the delivery waits for its conversation's turn, as the concurrency
/// slot is (so that a tenant's waiting deliveries never hold its own others back).
///
/// It also holds its conversation (when its tenant goes one delivery of a
/// conversation at a time) until the delivery ends, or stands in line
/// waiting for its turn: it then waits for one ahead of it, which may be the
/// conversation's next delivery in this read-ahead (a retry keeps its older
/// place), and which must then go out. Not while it waits for Redis: it is
/// not in line then, and the next one would only wait for it, holding a slot.
pub(super) struct TenantSlot {
    taken: Arc<AtomicUsize>,
    freed: Arc<Notify>,
    held: bool,
    conversation: Option<OutSlot>,
}

impl TenantSlot {
    fn take(taken: Arc<AtomicUsize>, freed: Arc<Notify>, conversation: Option<OutSlot>) -> Self {
        taken.fetch_add(1, Ordering::Relaxed);
        Self { taken, freed, held: true, conversation }
    }

    pub(super) fn hand_back(&mut self) {
        if std::mem::take(&mut self.held) {
            self.taken.fetch_sub(1, Ordering::Relaxed);
            self.freed.notify_one();
        }
    }

    /// Taken again after a wait, at once: a delivery whose turn came is not
    /// made to wait behind its tenant's newer ones.
    pub(super) fn take_again(&mut self) {
        if !self.held {
            self.taken.fetch_add(1, Ordering::Relaxed);
            self.held = true;
        }
    }
}

impl crate::pipeline::Share for TenantSlot {
    fn hand_back(&mut self) {
        TenantSlot::hand_back(self);
    }

    fn let_conversation_go(&mut self) {
        self.conversation = None;
    }

    fn take_again(&mut self) {
        TenantSlot::take_again(self);
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        self.hand_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn with_caps<T>(caps: &[(u128, usize)]) -> Fair<T> {
        let mut fair = Fair::default();
        for (t, cap) in caps {
            fair.set_cap(tenant(*t), *cap, false);
        }
        fair
    }

    #[test]
    fn slots_go_round_the_tenants_with_work_waiting() {
        let mut fair = with_caps(&[(1, 100), (2, 100)]);
        for i in 0..5 {
            fair.push(tenant(1), None, ("a", i));
        }
        fair.push(tenant(2), None, ("b", 0));
        fair.push(tenant(2), None, ("b", 1));
        let order: Vec<_> = std::iter::from_fn(|| fair.pop(false)).map(|(item, _slot)| item).collect();
        assert_eq!(order, [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("a", 3), ("a", 4)]);
        assert_eq!(fair.waiting(), 0);
    }

    #[test]
    fn a_tenant_at_its_cap_waits_while_the_others_go_on() {
        let mut fair = with_caps(&[(1, 2), (2, 2)]);
        for i in 0..4 {
            fair.push(tenant(1), None, ("a", i));
        }
        let (first, slot_a0) = fair.pop(false).expect("a has room");
        let (second, _slot_a1) = fair.pop(false).expect("a has room");
        assert_eq!((first, second), (("a", 0), ("a", 1)));
        assert!(fair.pop(false).is_none(), "a holds its 2 slots");
        fair.push(tenant(2), None, ("b", 0));
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some(("b", 0)), "b is not held behind a");
        drop(slot_a0);
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some(("a", 2)), "a slot given back is taken again");
        assert_eq!(fair.pop(true).map(|(item, _)| item), Some(("a", 3)), "caps ignored: all is handed out");
    }

    #[test]
    fn nothing_of_a_tenant_goes_out_before_its_cap_is_known() {
        let mut fair = Fair::default();
        fair.push(tenant(1), None, 0);
        assert!(fair.pop(false).is_none());
        assert!(!fair.has_room(tenant(1), None));
        fair.set_cap(tenant(1), 1, false);
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some(0));
    }

    #[test]
    fn a_slot_handed_back_while_waiting_makes_room_and_is_taken_again() {
        let mut fair = with_caps(&[(1, 1)]);
        fair.push(tenant(1), None, 0);
        fair.push(tenant(1), None, 1);
        let (_, mut slot) = fair.pop(false).expect("room");
        assert!(fair.pop(false).is_none());
        slot.hand_back();
        slot.hand_back();
        let (_, second) = fair.pop(false).expect("the waiting one's slot is free");
        slot.take_again();
        assert!(!fair.has_room(tenant(1), None));
        drop(slot);
        drop(second);
        assert!(fair.has_room(tenant(1), None), "both given back, once each");
    }

    #[test]
    fn room_at_once_only_with_nothing_of_the_tenant_waiting() {
        let mut fair = with_caps(&[(3, 1)]);
        assert!(fair.has_room(tenant(3), None));
        fair.push(tenant(3), None, 0);
        assert!(!fair.has_room(tenant(3), None), "one waits already: it goes first");
        let (_, slot) = fair.pop(false).expect("room");
        assert!(!fair.has_room(tenant(3), None), "its one slot is taken");
        drop(slot);
        assert!(fair.has_room(tenant(3), None));
        fair.push(tenant(3), None, 1);
        assert_eq!(fair.drain(), [1]);
        assert_eq!(fair.waiting(), 0);
    }

    #[test]
    fn deliveries_that_waited_too_long_are_taken_from_the_fronts() {
        let mut fair = with_caps(&[(1, 1), (2, 1)]);
        for i in [1, 2, 9, 3] {
            fair.push(tenant(1), None, i);
        }
        fair.push(tenant(2), None, 7);
        let mut old = fair.take_old(|i| *i < 5);
        old.sort();
        assert_eq!(old, [1, 2], "only from the front: 3 waits behind 9");
        assert_eq!(fair.waiting(), 3);
        assert_eq!(fair.drain().len(), 3);
    }

    #[test]
    fn a_tenant_with_slots_handed_back_is_not_forgotten() {
        let mut fair = with_caps(&[(0, 1)]);
        fair.push(tenant(0), None, 0);
        let (_, mut slot) = fair.pop(false).expect("room");
        slot.hand_back();
        for t in 1..=Fair::<u32>::PRUNE_AT as u128 + 1 {
            fair.set_cap(tenant(t), 1, false);
        }
        slot.take_again();
        assert!(!fair.has_room(tenant(0), None), "the slot taken again counts against the cap");
    }

    #[test]
    fn a_conversation_with_a_delivery_out_waits_while_the_others_of_its_tenant_go() {
        let mut fair = Fair::default();
        fair.set_cap(tenant(1), 10, true);
        fair.push(tenant(1), Some(7), "x1");
        fair.push(tenant(1), Some(7), "x2");
        fair.push(tenant(1), Some(8), "y1");
        let (first, x1) = fair.pop(false).expect("x1");
        assert_eq!(first, "x1");
        let (second, _y1) = fair.pop(false).expect("y1, past x2");
        assert_eq!(second, "y1", "x2 waits for x1");
        assert!(fair.pop(false).is_none());
        assert!(!fair.has_room(tenant(1), Some(7)));
        drop(x1);
        let (_, mut x2) = fair.pop(false).expect("x1 settled: x2 goes");
        fair.push(tenant(1), Some(7), "x3");
        assert!(fair.pop(false).is_none(), "x3 waits for x2");
        x2.hand_back();
        x2.take_again();
        assert!(
            fair.pop(false).is_none(),
            "a slot handed back (x2 waits for Redis) still holds its conversation"
        );
        crate::pipeline::Share::let_conversation_go(&mut x2);
        assert_eq!(
            fair.pop(false).map(|(item, _)| item),
            Some("x3"),
            "x2 waits for its turn, maybe behind x3: x3 goes"
        );
        // A tenant that coalesces bursts sends a conversation's next at once.
        fair.set_cap(tenant(2), 10, false);
        fair.push(tenant(2), Some(9), "z1");
        fair.push(tenant(2), Some(9), "z2");
        let (_, _z1) = fair.pop(false).expect("z1");
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some("z2"));
    }

    #[test]
    fn a_line_looked_down_in_vain_is_looked_at_again_when_something_joins_or_settles() {
        let mut fair = Fair::default();
        fair.set_cap(tenant(1), 10, true);
        fair.push(tenant(1), Some(7), "x1");
        fair.push(tenant(1), Some(7), "x2");
        let (_, x1) = fair.pop(false).expect("x1");
        assert!(fair.pop(false).is_none(), "x2 waits for x1");
        fair.push(tenant(1), Some(8), "y1");
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some("y1"), "y1 joined within reach");
        assert!(fair.pop(false).is_none());
        drop(x1);
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some("x2"), "x1 settled");
    }

    #[test]
    fn past_keep_back_a_conversation_kept_back_goes_out_and_lets_the_rest_of_its_line_go() {
        let mut fair = Fair::default();
        fair.set_cap(tenant(1), 10, true);
        fair.push(tenant(1), Some(7), 0);
        let (_, _x0) = fair.pop(false).expect("x0");
        for i in 1..=KEEP_BACK {
            fair.push(tenant(1), Some(7), i);
        }
        assert!(fair.pop(false).is_none(), "{KEEP_BACK} kept back behind x0");
        fair.push(tenant(1), Some(7), KEEP_BACK + 1);
        assert_eq!(fair.pop(false).map(|(item, _)| item), Some(1), "one too many: the first goes, in order");
        assert!(fair.pop(false).is_none(), "{KEEP_BACK} kept back again");
        // A line longer than a look: x's too many still go out, in order.
        for i in 0..LOOK_PAST {
            fair.push(tenant(1), Some(7), 100 + i);
        }
        fair.push(tenant(1), Some(8), 999);
        let next: Vec<_> = std::iter::from_fn(|| fair.pop(false)).map(|(item, _)| item).take(3).collect();
        assert_eq!(next, [2, 3, 4], "x's too many go out in order");
    }
}
