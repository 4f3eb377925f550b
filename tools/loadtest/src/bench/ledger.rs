//! Every unique message the bench published (when, in which phase, in which
//! conversation and burst) and every reply that came back for it, matched by the
//! fingerprints the reply answers (its `answers` and its own `fingerprint`,
//! CONTRACT §4: one reply per message today, one per burst once bursts are
//! coalesced). From it come the drain time, the publish -> reply latencies, the
//! burst latencies, the exactly-one-reply check and, through `crate::order`, the
//! per-conversation order check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use tokio::sync::Notify;

use super::workload::Planned;
use crate::order::{self, Answered, Order, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Drain = 0,
    Paced = 1,
}

struct Entry {
    phase: Phase,
    published_at: Instant,
    replied_at: Option<Instant>,
    replies: u32,
    /// (phase, burst number) when it was sent in a burst.
    burst: Option<(Phase, u64)>,
}

#[derive(Default)]
struct Book {
    /// By fingerprint.
    entries: HashMap<String, Entry>,
    unique: [usize; 2],
    replied: [usize; 2],
    /// Replies that answer no message the bench published, or are not replies.
    stray: u64,
    /// Distinct replies that answered a published message.
    replies: usize,
    order: Order,
}

#[derive(Default)]
pub struct Ledger {
    book: Mutex<Book>,
    sentinel: Notify,
}

/// The message id of the marker the bench sends through the reply queue after
/// the workers stopped: once it arrives, every reply published before it has too.
const SENTINEL: &str = "bench-sentinel";

impl Ledger {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Never held across an await or a panic-prone call; a poisoned lock still has sound data.
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a publish; a copy of a message keeps the first publish time.
    pub fn published(&self, planned: &Planned, phase: Phase, at: Instant) {
        let mut book = self.book();
        if !book.entries.contains_key(&planned.fingerprint) {
            let entry = Entry {
                phase,
                published_at: at,
                replied_at: None,
                replies: 0,
                burst: planned.burst.map(|b| (phase, b)),
            };
            book.entries.insert(planned.fingerprint.clone(), entry);
            book.unique[phase as usize] += 1;
            book.order.published(&planned.fingerprint, &planned.conversation);
        }
    }

    fn replied(&self, body: &[u8], at: Instant) {
        let mut book = self.book();
        let Some(reply) = Answered::parse(body) else {
            book.stray += 1;
            return;
        };
        let mut known = false;
        for fingerprint in &reply.fingerprints {
            let Some(entry) = book.entries.get_mut(fingerprint) else { continue };
            known = true;
            entry.replies += 1;
            if entry.replied_at.is_none() {
                entry.replied_at = Some(at);
                let phase = entry.phase as usize;
                book.replied[phase] += 1;
            }
        }
        if !known {
            book.stray += 1;
        }
        if matches!(book.order.replied(&reply), Verdict::InOrder | Verdict::OutOfOrder) {
            book.replies += 1;
        }
    }

    /// (unique messages replied to, unique messages published) in `phase`.
    pub fn progress(&self, phase: Phase) -> (usize, usize) {
        let book = self.book();
        (book.replied[phase as usize], book.unique[phase as usize])
    }

    /// When the first and the last reply of `phase` arrived.
    pub fn reply_span(&self, phase: Phase) -> Option<(Instant, Instant)> {
        let book = self.book();
        let times = || book.entries.values().filter(|e| e.phase == phase).filter_map(|e| e.replied_at);
        Some((times().min()?, times().max()?))
    }

    /// Publish -> first reply of every unique message of `phase` that has one, sorted.
    pub fn latencies(&self, phase: Phase) -> Vec<Duration> {
        let mut all: Vec<Duration> = self
            .book()
            .entries
            .values()
            .filter(|e| e.phase == phase)
            .filter_map(|e| e.replied_at.map(|r| r.saturating_duration_since(e.published_at)))
            .collect();
        all.sort();
        all
    }

    /// Last message of a burst of `phase` -> the last reply answering one of its
    /// messages, for every burst all of whose messages have a reply, sorted.
    pub fn burst_latencies(&self, phase: Phase) -> Vec<Duration> {
        let book = self.book();
        // (last publish, last reply, all replied) per burst.
        let mut bursts: HashMap<u64, (Instant, Instant, bool)> = HashMap::new();
        for e in book.entries.values() {
            let Some((p, burst)) = e.burst else { continue };
            if p != phase {
                continue;
            }
            let replied = e.replied_at.unwrap_or(e.published_at);
            let b = bursts.entry(burst).or_insert((e.published_at, replied, true));
            b.0 = b.0.max(e.published_at);
            b.1 = b.1.max(replied);
            b.2 &= e.replied_at.is_some();
        }
        let mut all: Vec<Duration> = bursts
            .into_values()
            .filter(|(_, _, complete)| *complete)
            .map(|(last_message, last_reply, _)| last_reply.saturating_duration_since(last_message))
            .collect();
        all.sort();
        all
    }

    /// The per-conversation order check over every reply so far.
    pub fn order(&self) -> order::Tally {
        self.book().order.tally()
    }

    pub fn tally(&self) -> Tally {
        let book = self.book();
        Tally {
            unique: book.entries.len(),
            extra_replies: book.entries.values().map(|e| u64::from(e.replies.saturating_sub(1))).sum(),
            replied_twice: book.entries.values().filter(|e| e.replies > 1).count(),
            missing: book.entries.values().filter(|e| e.replies == 0).count(),
            stray: book.stray,
            replies: book.replies,
        }
    }

    /// Consumes the reply queue (no acks: it is the bench's own), recording each
    /// reply as it arrives, until the channel closes.
    pub async fn collect(self: Arc<Self>, channel: &Channel, queue: &str) -> anyhow::Result<()> {
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "bench-replies".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let at = Instant::now();
                let properties = &delivery.properties;
                if properties.message_id().as_ref().is_some_and(|m| m.as_str() == SENTINEL) {
                    self.sentinel.notify_one();
                } else {
                    self.replied(&delivery.data, at);
                }
            }
        });
        Ok(())
    }

    /// Sends the sentinel through the reply queue and waits for it: afterwards,
    /// every reply the (stopped) workers published has been counted.
    pub async fn flush(&self, channel: &Channel, queue: &str) -> anyhow::Result<()> {
        let arrived = self.sentinel.notified();
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default().with_message_id(SENTINEL.into()),
            )
            .await?
            .await?;
        tokio::time::timeout(Duration::from_secs(30), arrived)
            .await
            .map_err(|_| anyhow::anyhow!("the reply queue did not deliver the end marker within 30 s"))
    }
}

/// The exactly-one-reply check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub unique: usize,
    /// Replies beyond the first, over all messages.
    pub extra_replies: u64,
    pub replied_twice: usize,
    pub missing: usize,
    pub stray: u64,
    /// Distinct replies: one per message, or one per coalesced burst.
    pub replies: usize,
}

impl Tally {
    pub fn holds(&self) -> bool {
        self.extra_replies == 0 && self.missing == 0 && self.stray == 0
    }
}
