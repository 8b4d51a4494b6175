//! The simulated network: every message between nodes goes through here.
//!
//! A message sent at tick `t` is delivered at some tick in `t+1 ..= t+max_delay`; messages due
//! on the same tick are delivered in a random order, so delay alone produces reordering. The
//! network also loses and duplicates messages and cuts links. Links are directed, which is how
//! one-way partitions are expressed; a symmetric partition cuts both directions.
//!
//! In the liveness phase the network behaves like one healthy TCP stream per link: no loss,
//! no duplicates, and per-link FIFO order (delays still vary).
//!
//! A minimum delay of one tick keeps each tick finite: a reply is never delivered within the tick
//! that produced it, so no chain of messages can spin forever inside one step.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_raft::{Message, NodeId};

use super::rng::Rng;

/// In-flight messages and the state of every link.
#[derive(Debug)]
pub struct Network {
    /// Ordered by (delivery tick, random tie-break, sequence number); each message carries the
    /// sender's incarnation, so a report about it never reaches a restarted sender.
    in_flight: BTreeMap<(u64, u64, u64), Box<(Message, u64)>>,
    seq: u64,
    /// Cut directed links `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    rng: Rng,
    /// Per message: lost.
    pub drop_ppm: u32,
    /// Per message: duplicated.
    pub dup_ppm: u32,
    /// Largest delay in ticks (at least 1).
    pub max_delay: u64,
    /// Deliver in order per link, as a TCP stream would (the liveness phase).
    fifo: bool,
    /// Per link, the delivery tick of the last message queued (FIFO mode).
    last_at: BTreeMap<(NodeId, NodeId), u64>,
}

impl Network {
    /// An empty network drawing its randomness from `rng`.
    pub fn new(rng: Rng, drop_ppm: u32, dup_ppm: u32, max_delay: u64) -> Network {
        Network {
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            rng,
            drop_ppm,
            dup_ppm,
            max_delay: max_delay.max(1),
            fifo: false,
            last_at: BTreeMap::new(),
        }
    }

    /// Queues `msg` sent at tick `now` by the sender's `incarnation`. Gives the message back when
    /// the network lost it at once (the caller may tell the sender, or a lying transport may fake
    /// an answer).
    pub fn send(&mut self, now: u64, msg: Message, incarnation: u64) -> Result<(), Message> {
        if self.rng.chance(self.drop_ppm) {
            return Err(msg);
        }
        if self.rng.chance(self.dup_ppm) {
            self.enqueue(now, msg.clone(), incarnation);
        }
        self.enqueue(now, msg, incarnation);
        Ok(())
    }

    /// Queues `msg` without any chance of loss (fabricated or scenario traffic).
    pub fn enqueue(&mut self, now: u64, msg: Message, incarnation: u64) {
        let mut at = now + self.rng.between(1, self.max_delay);
        let mut tie = self.rng.next_u64();
        if self.fifo {
            let last = self.last_at.entry((msg.from, msg.to)).or_insert(0);
            at = at.max(*last);
            *last = at;
            tie = 0; // same tick: sequence order
        }
        self.seq += 1;
        self.in_flight
            .insert((at, tie, self.seq), Box::new((msg, incarnation)));
    }

    /// Removes and returns the next message due at or before `now` with its sender's
    /// incarnation and whether the link it travels is cut (a message on a cut link is lost; the
    /// caller only learns of it for reporting).
    pub fn next_due(&mut self, now: u64) -> Option<(Message, u64, bool)> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > now {
            return None;
        }
        let (msg, incarnation) = *self.in_flight.remove(&key)?;
        let cut = self.cut.contains(&(msg.from, msg.to));
        Some((msg, incarnation, cut))
    }

    /// Cuts the link `from -> to`.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Stops losing, duplicating and reordering messages (the liveness phase: a healthy TCP
    /// stream per link). Messages already in flight keep their positions.
    pub fn make_reliable(&mut self) {
        self.drop_ppm = 0;
        self.dup_ppm = 0;
        self.fifo = true;
    }
}
