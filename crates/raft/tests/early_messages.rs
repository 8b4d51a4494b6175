//! `Ready::early_messages`: which messages may leave before the persist step (crate docs,
//! Ready contract step 0), and that sending them early never lets the leader count its own
//! unsynced entries toward the commit quorum (docs/ARCHITECTURE.md, "Raft pitfalls").

mod support;

use flotilla_raft::*;
use support::Net;

fn is_log_msg(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
    )
}

fn appends_to(msgs: &[Message], to: NodeId, index: u64) -> bool {
    msgs.iter().any(|m| {
        m.to == to
            && matches!(&m.body, MessageBody::Append { entries, .. }
                if entries.iter().any(|e| e.index == index))
    })
}

/// Persists a Ready's snapshot, entries and hard state without syncing or advancing: what a
/// caller has done while its sync is still running.
fn write_unsynced(n: &mut RawNode<MemStorage>, rd: &Ready) {
    let store = n.store_mut();
    if let Some(s) = rd.snapshot.clone() {
        store.apply_snapshot(s).unwrap();
    }
    store.append(&rd.entries).unwrap();
    if let Some(hs) = rd.hard_state {
        store.set_hard_state(hs).unwrap();
    }
}

#[test]
fn leader_appends_and_heartbeats_come_out_early() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.drain();
    let (_, idx) = net.node(1).propose(b"x".to_vec()).unwrap();
    let rd = net.node(1).ready();
    assert_eq!(rd.entries.last().map(|e| e.index), Some(idx));
    assert!(appends_to(&rd.early_messages, 2, idx));
    assert!(appends_to(&rd.early_messages, 3, idx));
    assert!(
        rd.messages.iter().all(|m| !is_log_msg(m)),
        "no replication waits for the leader's sync: {:?}",
        rd.messages
    );
    assert!(rd.early_messages.iter().all(|m| m.term == 1 && m.from == 1));
    write_unsynced(net.node(1), &rd);
    net.node(1).advance();

    // Heartbeats too.
    let hb = net.configs[&1].heartbeat_tick as usize;
    for _ in 0..hb {
        net.node(1).tick();
    }
    let rd = net.node(1).ready();
    let beats = rd
        .early_messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count();
    assert_eq!(beats, 2, "{:?}", rd.early_messages);
    net.node(1).advance();
}

#[test]
fn candidates_and_followers_never_send_early() {
    // A pre-candidate and a candidate: their requests wait for the sync (the vote for itself
    // and the new term must be durable first, pitfall 1).
    let mut net = Net::new(&[1, 2, 3]);
    net.node(1).campaign().unwrap();
    let rd = net.node(1).ready();
    assert_eq!(net.status(1).role, Role::PreCandidate);
    assert!(rd.early_messages.is_empty());
    assert!(
        rd.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::PreVote { .. }))
    );
    net.node(1).advance();

    let mut net = Net::with(&[1, 2, 3], |c| c.pre_vote = false);
    net.node(1).campaign().unwrap();
    let rd = net.node(1).ready();
    assert_eq!(net.status(1).role, Role::Candidate);
    assert!(rd.early_messages.is_empty());
    assert!(
        rd.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Vote { .. }))
    );
    write_unsynced(net.node(1), &rd);
    net.node(1).advance();

    // A voter granting a vote, and a follower acknowledging entries.
    let mut net = Net::new(&[1, 2, 3]);
    net.node(1).campaign().unwrap();
    loop {
        let mut moved = false;
        for id in [1, 2, 3] {
            while net.node(id).has_ready() {
                moved = true;
                let rd = net.node(id).ready();
                if id != 1 {
                    assert!(
                        rd.early_messages.is_empty(),
                        "follower {id} sent early: {:?}",
                        rd.early_messages
                    );
                }
                write_unsynced(net.node(id), &rd);
                net.queue.extend(rd.early_messages);
                net.queue.extend(rd.messages);
                net.node(id).advance();
            }
        }
        while let Some(m) = net.queue.pop_front() {
            moved = true;
            net.step(m);
        }
        if !moved {
            break;
        }
    }
    assert_eq!(net.status(1).role, Role::Leader);
    let (_, idx) = net.node(1).propose(b"y".to_vec()).unwrap();
    let rd = net.node(1).ready();
    write_unsynced(net.node(1), &rd);
    net.node(1).advance();
    for m in rd.early_messages.into_iter().filter(|m| m.to == 2) {
        net.step(m);
    }
    let rd = net.node(2).ready();
    assert!(rd.early_messages.is_empty());
    assert!(rd.messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse { reject: false, index, .. } if index == idx
    )));
    net.node(2).advance();
}

#[test]
fn a_leader_whose_term_is_not_durable_sends_nothing_early() {
    // A single voter with a learner wins its election inside one Ready: the new term and the
    // self-vote are in this very Ready, so even its Appends wait for the sync. Otherwise a
    // crash could bring it back in the old term, win the same term again and send a
    // different entry at the same index and term.
    let cs = ConfState {
        voters: [1].into(),
        learners: [2].into(),
    };
    let mut n = RawNode::new(&Config::new(1), MemStorage::new_with_conf_state(cs)).unwrap();
    n.campaign().unwrap();
    assert_eq!(n.status().role, Role::Leader);
    let rd = n.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, 1)));
    assert!(rd.early_messages.is_empty(), "{:?}", rd.early_messages);
    assert!(rd.messages.iter().any(|m| m.to == 2 && is_log_msg(m)));
    write_unsynced(&mut n, &rd);
    n.advance();

    // Once the term is durable, the next Append to the learner goes early.
    n.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse {
            reject: false,
            index: 1,
            hint_index: 0,
            hint_term: 0,
        },
    })
    .unwrap();
    let (_, idx) = n.propose(b"z".to_vec()).unwrap();
    let rd = n.ready();
    assert!(appends_to(&rd.early_messages, 2, idx), "{rd:?}");
    assert!(rd.messages.iter().all(|m| !is_log_msg(m)));
    n.advance();
}

#[test]
fn a_leader_that_stepped_down_in_the_ready_sends_nothing_early() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.drain();
    let hb = net.configs[&1].heartbeat_tick as usize;
    for _ in 0..hb {
        net.node(1).tick();
    }
    // Heartbeats are queued; then a message of a higher term deposes the leader.
    net.step(Message {
        from: 2,
        to: 1,
        term: 5,
        body: MessageBody::AppendResponse {
            reject: false,
            index: 0,
            hint_index: 0,
            hint_term: 0,
        },
    });
    assert_eq!(net.status(1).role, Role::Follower);
    let rd = net.node(1).ready();
    assert!(rd.early_messages.is_empty(), "{:?}", rd.early_messages);
    assert!(
        rd.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })),
        "what the leader queued still goes out, after the sync"
    );
    net.node(1).advance();
}

/// Pitfall 1 (a leader counts its own unsynced entries), with early sends.
#[test]
fn early_acks_do_not_count_the_leaders_unsynced_entries() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.drain();
    let (_, idx) = net.node(1).propose(b"p".to_vec()).unwrap();
    let rd = net.node(1).ready();
    // The leader wrote but has not synced; its Appends are already out. Only follower 2
    // answers: with the leader's own (unsynced) copy that would be a majority of 3.
    write_unsynced(net.node(1), &rd);
    for m in rd.early_messages.iter().filter(|m| m.to == 2).cloned() {
        net.step(m);
    }
    let acks = net.outbox(2);
    assert!(acks.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse { reject: false, index, .. } if index == idx
    )));
    for m in acks {
        net.step(m);
    }
    assert!(
        net.status(1).commit < idx,
        "committed {} before the leader's sync of {idx}",
        net.status(1).commit
    );
    assert!(net.status(1).progress[&1].match_index < idx);
    // The sync completes: now the leader counts itself.
    net.node(1).advance();
    assert_eq!(net.status(1).commit, idx);
    assert_eq!(net.status(1).progress[&1].match_index, idx);
}

#[test]
fn followers_alone_can_commit_while_the_leader_syncs() {
    // Two of three voters durable is a majority, whether or not the leader is one of them.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.drain();
    let (_, idx) = net.node(1).propose(b"q".to_vec()).unwrap();
    let rd = net.node(1).ready();
    write_unsynced(net.node(1), &rd);
    for m in rd.early_messages.clone() {
        net.step(m);
    }
    let mut acks = net.outbox(2);
    acks.extend(net.outbox(3));
    for m in acks {
        net.step(m);
    }
    assert_eq!(net.status(1).commit, idx);
    assert!(net.status(1).progress[&1].match_index < idx);
    net.node(1).advance();
    assert_eq!(net.status(1).progress[&1].match_index, idx);
}
