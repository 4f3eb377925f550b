//! Stage "turn": a message is answered on its conversation's turn, after every
//! earlier one (CONTRACT §3, Conversations). The claim ([`crate::dedup`]) says
//! whether it is this message's turn; if not, the delivery waits here, holding
//! no concurrency slot, until the process is told the turn has come
//! ([`crate::dedup::wakes`]), looking again now and then in case the word was
//! lost. A delivery that has waited `turns.max_wait_secs`, that finds the
//! waiting room full, or whose process is stopping, is parked (deferred,
//! no attempt spent) and keeps its place in line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::Pipeline;
use crate::dedup::line::EntryStatus;
use crate::dedup::{Claim, DedupError, InLine, TurnEntry};
use crate::keys::ConversationKeys;
use crate::model::{Envelope, Fingerprint};
use crate::outcome::Outcome;
use crate::references::ListKey;

/// The first and the longest pause before a waiting delivery looks again by
/// itself (its wake is what normally ends the wait).
const LOOK_AGAIN_FIRST: Duration = Duration::from_millis(500);
const LOOK_AGAIN_MAX: Duration = Duration::from_secs(5);
/// How long a delivery waits for an unreachable Redis at its claim (at most
/// `turns.max_wait`): long enough for a restart, short enough that a process
/// whose own connection is stuck hands its deliveries on (as a failed attempt)
/// instead of holding them, and its conversations' later ones behind them.
const REDIS_WAIT_MAX: Duration = Duration::from_secs(5);
/// The longest pause before a delivery that found Redis unreachable tries again.
const REDIS_AGAIN_MAX: Duration = Duration::from_secs(1);

/// How a process holds the deliveries that wait for their turn.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub max_wait: Duration,
    /// An entry ahead unseen this long, and nowhere to be found, is skipped.
    pub stale: Duration,
    /// After Redis lost a conversation's line: how long a delivery lets the
    /// others in flight find their places again (one lease renewal and a margin).
    pub settle: Duration,
}

/// The concurrency slot a delivery holds while it is worked on; handed back
/// while it waits for its turn, so that waiting never starves the messages
/// whose turn it is.
///
/// It also keeps one process's deliveries of a conversation in the order they
/// were read: a delivery takes its place in line only once the one read before
/// it (of the same conversation, in this process) has taken its own, since
/// tasks running side by side could otherwise reach Redis in either order.
pub struct Slot {
    semaphore: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
    /// Fires (or is dropped) once the previous delivery of the conversation is in line.
    after: Option<oneshot::Receiver<()>>,
    /// Fired (or dropped) once this one is.
    in_line: Option<oneshot::Sender<()>>,
    /// The previous delivery's fingerprint while it waits in line, and this one's.
    before: Option<Arc<Waiting>>,
    own: Option<Arc<Waiting>>,
    /// Another share handed back and taken again with the slot (the tenant's).
    share: Option<Box<dyn Share>>,
    /// A claim of this delivery was answered: it stood in its conversation's line.
    stood_in_line: bool,
    /// It took its place in line as it was read, before its claim.
    joined: bool,
    /// The message, decoded (and its route checked) as it was read.
    decoded: Option<crate::model::Inbound>,
    /// The writer's lane its reply commits in.
    lane: crate::store::Lane,
}

/// A share of capacity that a delivery holds beside its concurrency slot,
/// handed back while it waits for its turn as the slot is.
pub trait Share: Send + Sync {
    fn hand_back(&mut self);
    fn take_again(&mut self);
    /// The delivery stands in its conversation's line, waiting (or
    /// debouncing): whatever of the conversation the share holds back may go.
    fn let_conversation_go(&mut self) {}
}

/// Where a delivery stands in its process's order of its conversation (see
/// [`Slot::ordered`]), decided as it is read.
pub struct Order {
    pub after: Option<(oneshot::Receiver<()>, Arc<Waiting>)>,
    pub in_line: oneshot::Sender<()>,
    pub own: Arc<Waiting>,
}

/// Which message a delivery is, while it waits in line (for the next delivery
/// of its conversation in the same process to name in its claim).
#[derive(Default)]
pub struct Waiting(std::sync::Mutex<Option<Fingerprint>>);

impl Waiting {
    fn set(&self, fp: Option<&Fingerprint>) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = fp.cloned();
    }

    fn get(&self) -> Option<Fingerprint> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Slot {
    pub fn held(semaphore: Arc<Semaphore>, permit: OwnedSemaphorePermit) -> Self {
        Self { semaphore: Some(semaphore), permit: Some(permit), ..Self::unbounded() }
    }

    /// Holds `share` beside the slot.
    pub fn sharing(mut self, share: Box<dyn Share>) -> Self {
        self.share = Some(share);
        self
    }

    /// Says it took its place in line as it was read (`Dedup::join`).
    pub fn joined(mut self, joined: bool) -> Self {
        self.joined = joined;
        self
    }

    /// Carries the message as it was decoded when read, so that it is not decoded twice.
    pub fn decoded(mut self, inbound: Option<crate::model::Inbound>) -> Self {
        self.decoded = inbound;
        self
    }

    /// Commits its reply in `lane` (its tenant had nothing waiting: `Light`).
    pub fn lane(mut self, lane: crate::store::Lane) -> Self {
        self.lane = lane;
        self
    }

    pub(super) fn commit_lane(&self) -> crate::store::Lane {
        self.lane
    }

    pub(super) fn take_decoded(&mut self) -> Option<crate::model::Inbound> {
        self.decoded.take()
    }

    /// Whether a claim of this delivery was answered (it stood in its line).
    pub fn stood_in_line(&self) -> bool {
        self.stood_in_line
    }

    /// No slot to hand back (a test driving one envelope at a time).
    pub fn unbounded() -> Self {
        Self {
            semaphore: None,
            permit: None,
            after: None,
            in_line: None,
            before: None,
            own: None,
            share: None,
            stood_in_line: false,
            joined: false,
            decoded: None,
            lane: crate::store::Lane::default(),
        }
    }

    /// Orders this delivery after `after` (the previous one of its
    /// conversation read by this process); `in_line` tells the next one.
    /// `before`: what the previous one shows while it waits; `own`: this one's.
    pub fn ordered(mut self, order: Order) -> Self {
        let Order { after, in_line, own } = order;
        (self.after, self.before) = after.map_or((None, None), |(rx, before)| (Some(rx), Some(before)));
        self.in_line = Some(in_line);
        self.own = Some(own);
        self
    }

    fn waiting_before(&self) -> Option<Fingerprint> {
        self.before.as_ref().and_then(|before| before.get())
    }

    fn waiting_as(&self, fp: Option<&Fingerprint>) {
        if let Some(own) = &self.own {
            own.set(fp);
        }
    }

    async fn wait_for_predecessor(&mut self) {
        if let Some(after) = self.after.take() {
            // Ok or a dropped sender: either way the one before is in line, or gone.
            let _ = after.await;
        }
    }

    fn now_in_line(&mut self) {
        self.stood_in_line = true;
        if let Some(tx) = self.in_line.take() {
            let _ = tx.send(());
        }
    }

    pub(super) fn hand_back(&mut self) {
        self.permit = None;
        if let Some(share) = &mut self.share {
            share.hand_back();
        }
    }

    /// It stands in its conversation's line and waits: the conversation's
    /// next delivery in the read-ahead may go (it may be the one waited for).
    pub(super) fn let_conversation_go(&mut self) {
        if let Some(share) = &mut self.share {
            share.let_conversation_go();
        }
    }

    pub(super) async fn take_again(&mut self) {
        if let (None, Some(semaphore)) = (&self.permit, &self.semaphore) {
            self.permit = semaphore.clone().acquire_owned().await.ok();
        }
        if let Some(share) = &mut self.share {
            share.take_again();
        }
    }
}

/// A message ahead whose holder looked done without the line hearing of it,
/// and since when: skipped only if it still looks so a lease renewal later.
struct Suspect {
    ahead: Fingerprint,
    since: Instant,
}

/// Why a delivery's wait ended without its turn.
enum Parked {
    /// Waited `max_wait`, or the waiting room was full, or the process stops.
    Behind(Fingerprint),
    /// Redis failed meanwhile.
    Redis(DedupError),
}

impl Pipeline {
    /// Claims message `fp` on its conversation's turn, waiting for it if
    /// need be: the lease, or the claim's answer when it is not this
    /// delivery's to process (completed, held elsewhere, parked to wait).
    pub(super) async fn take_turn(
        &self,
        envelope: &Envelope<'_>,
        line: &ConversationKeys,
        fp: &Fingerprint,
        list_key: &ListKey,
        slot: &mut Slot,
    ) -> Result<Claim, Outcome> {
        // A delivery that took its place as it was read stood in line: should
        // its place be gone (Redis lost its data), it lets the others find theirs.
        let mut place = InLine {
            intake_us: envelope.intake_us,
            stood_before: slot.joined,
            skip: None,
            ahead: None,
            before: None,
            joined_at_read: slot.joined,
        };
        let mut room: Option<OwnedSemaphorePermit> = None;
        let mut waiting_since: Option<Instant> = None;
        let mut pause = LOOK_AGAIN_FIRST;
        let mut unrecorded: Option<Suspect> = None;
        slot.wait_for_predecessor().await;
        let ended = loop {
            // Listen before asking: a wake sent in between is not missed.
            let mut wake = self.wakes.listen(fp.as_str());
            place.before = slot.waiting_before();
            let claim = self.timed("lock", self.dedup.claim(line, fp, &place, Some(list_key.as_str()))).await;
            // Only a claim Redis answered put it in line: until then the
            // conversation's next delivery in this process waits behind it
            // (had it gone ahead while this one waited for Redis, it would
            // take the turn first as Redis came back).
            if claim.is_ok() {
                slot.now_in_line();
                place.joined_at_read = false;
            }
            let mut unreachable: Option<DedupError> = None;
            let (ahead, pause_for) = match claim {
                Ok(Claim::Wait { ahead, entry }) => {
                    place.stood_before = true;
                    place.ahead = Some(ahead.clone());
                    place.skip = self.abandoned(line, &ahead, entry.as_ref(), &mut unrecorded).await;
                    if place.skip.is_some() {
                        continue;
                    }
                    // A holder whose end looks unrecorded is looked at again
                    // once it has had the time to renew (or give up) its lease.
                    let pause_for = match &unrecorded {
                        Some(suspect) if suspect.ahead == ahead => self.settings.turns.settle,
                        _ => pause,
                    };
                    (ahead, pause_for)
                }
                Ok(Claim::Lost) => {
                    place.stood_before = true;
                    tracing::warn!(fingerprint = %fp, "redis lost this conversation's line; letting the others find their places");
                    (fp.clone(), self.settings.turns.settle)
                }
                Ok(claim) => break Ok(claim),
                // Redis down: the delivery waits for it (holding its place in
                // this process's order of the conversation), up to `max_wait`,
                // rather than going to a retry while the conversation's later
                // messages, read after it, take the turn as Redis comes back.
                // It then claims as one that stood in line: if Redis lost the
                // line meanwhile, it lets the others find their places first.
                Err(e) => match waiting_since {
                    Some(since) if since.elapsed() >= self.settings.turns.max_wait.min(REDIS_WAIT_MAX) => {
                        break Err(Parked::Redis(e));
                    }
                    _ if self.stopping.is_cancelled() => break Err(Parked::Redis(e)),
                    _ => {
                        tracing::warn!(fingerprint = %fp, error = %e, "redis unavailable at the claim; waiting for it");
                        place.stood_before = true;
                        unreachable = Some(e);
                        // Looked at often enough that it is back in line soon
                        // after Redis is (before the later messages that other
                        // processes read meanwhile, as far as it can be).
                        (fp.clone(), pause.min(REDIS_AGAIN_MAX))
                    }
                },
            };
            slot.waiting_as(Some(fp));
            // What a wait ended here is parked for: Redis down still fails the attempt.
            let mut parked = |ahead| match unreachable.take() {
                Some(e) => Parked::Redis(e),
                None => Parked::Behind(ahead),
            };
            if room.is_none() {
                match self.waiting.clone().try_acquire_owned() {
                    Ok(permit) => room = Some(permit),
                    Err(_) => break Err(parked(ahead)),
                }
                self.metrics.turns_waiting.inc();
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.settings.turns.max_wait || self.stopping.is_cancelled() {
                break Err(parked(ahead));
            }
            if unreachable.is_none() {
                slot.let_conversation_go();
            }
            slot.hand_back();
            tokio::select! {
                _ = wake.woken() => {}
                _ = tokio::time::sleep(pause_for) => pause = (pause * 2).min(LOOK_AGAIN_MAX),
                _ = self.stopping.cancelled() => {}
            }
            slot.take_again().await;
        };
        slot.waiting_as(None);
        if let Some(since) = waiting_since {
            self.metrics.turns_waiting.dec();
            self.metrics.turn_wait_seconds.observe(since.elapsed().as_secs_f64());
        }
        drop(room);
        match ended {
            Ok(claim) => Ok(claim),
            Err(Parked::Behind(behind)) => {
                self.metrics.turns_parked.inc();
                Err(Outcome::Waiting { fingerprint: fp.clone(), behind })
            }
            Err(Parked::Redis(e)) => Err(Outcome::Failed { fingerprint: Some(fp.clone()), error: e.into() }),
        }
    }

    /// When the entry ahead belongs to a message that is nowhere to be found
    /// (parked and never back, or held by a process that is gone, for
    /// `turns.stale`), or whose live holder ended its work without the line
    /// hearing of it (Redis failed as it finished), what the claim removes so
    /// the line moves on.
    ///
    /// A holder paused past its lease looks the same as one whose end went
    /// unrecorded (no lock, state still `processing`, its process alive once
    /// it wakes) until it renews: so that is believed only when it still
    /// holds `turns.settle` (one renewal and a margin) after it was first seen.
    async fn abandoned(
        &self,
        line: &ConversationKeys,
        ahead: &Fingerprint,
        entry: Option<&TurnEntry>,
        unrecorded: &mut Option<Suspect>,
    ) -> Option<String> {
        let Some(entry) = entry else {
            // In line without an entry: something else wrote the line.
            self.skipped(ahead, "no entry");
            return Some(format!("{ahead}|"));
        };
        let age_ms = crate::dedup::now_ms().saturating_sub(entry.since_ms);
        let lock_ttl_ms = i64::try_from(self.dedup.lock_ttl().as_millis()).unwrap_or(i64::MAX);
        // Answered, but its end never reached the line (Redis failed as it
        // finished, and the sweeper then released its lock as a dead
        // holder's, so its state reads `released`, as for one whose delivery
        // comes back: this one's never does). Its committed reply, and no
        // lock, say it is over; the chaos run through a cluster stalled on it.
        if entry.status == EntryStatus::Taken
            && age_ms > lock_ttl_ms
            && matches!(self.dedup.is_locked(line.shard, ahead).await, Ok(false))
            && matches!(crate::store::has_reply(&self.db, ahead).await, Ok(true))
        {
            self.skipped(ahead, "answered, its end unrecorded");
            return Some(entry.skip_token(ahead.as_str()));
        }
        if entry.status == EntryStatus::Taken
            && age_ms > lock_ttl_ms
            && matches!(self.dedup.ended_unrecorded(line.shard, ahead).await, Ok(true))
            && matches!(self.dedup.instance_alive(&entry.instance).await, Ok(true))
        {
            match unrecorded {
                Some(suspect) if suspect.ahead == *ahead => {
                    if suspect.since.elapsed() >= self.settings.turns.settle {
                        *unrecorded = None;
                        self.skipped(ahead, "ended unrecorded");
                        return Some(entry.skip_token(ahead.as_str()));
                    }
                }
                _ => *unrecorded = Some(Suspect { ahead: ahead.clone(), since: Instant::now() }),
            }
            return None;
        }
        if unrecorded.as_ref().is_some_and(|suspect| suspect.ahead == *ahead) {
            *unrecorded = None;
        }
        if age_ms < i64::try_from(self.settings.turns.stale.as_millis()).unwrap_or(i64::MAX) {
            return None;
        }
        // A waiting delivery renews its entry at every look (at most 5 s
        // apart), and one in a read-ahead is parked long before `stale`
        // (see `worker::intake`): a waiting entry this old is no one's, even
        // if its process lives (its delivery was dead-lettered by the broker,
        // say, before its claim).
        let gone = match entry.status {
            EntryStatus::Parked | EntryStatus::Waiting => true,
            EntryStatus::Taken => matches!(self.dedup.instance_alive(&entry.instance).await, Ok(false)),
        };
        gone.then(|| {
            self.skipped(ahead, entry.status.as_str());
            entry.skip_token(ahead.as_str())
        })
    }

    fn skipped(&self, ahead: &Fingerprint, status: &str) {
        self.metrics.turns_skipped.inc();
        tracing::warn!(ahead = %ahead, status, "skipping a message ahead in line that is nowhere to be found");
    }
}
