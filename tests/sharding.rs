//! Sockets live on their conversation's shard (`shard_for`): whichever
//! acceptor the kernel's SO_REUSEPORT spread picks, the session is handed to
//! the owner shard, counted there, and gets its conversation's broadcasts.

#[macro_use]
mod support;

use std::time::Duration;

use chatgate::{shard_for, IoDriver};
use support::*;

on_both_drivers!(
    sockets_are_counted_on_their_owner_shard,
    broadcasts_reach_sockets_from_every_acceptor
);

#[test]
fn shard_for_is_the_conversation_id_modulo_shards() {
    for c in [1_i64, 2, 3, 7, 8, 1_000_001, i64::MAX] {
        for n in [1_usize, 2, 3, 4, 16] {
            assert_eq!(
                shard_for(c, n),
                (c % n as i64) as usize,
                "shard_for({c}, {n})"
            );
        }
    }
}

const WAIT: Duration = Duration::from_secs(5);

/// `count` conversations between alice and bob owned by shard `shard` (of 2).
fn conversations_on(gw: &TestGateway, users: &[&User], shard: usize, count: usize) -> Vec<i64> {
    let mut out = Vec::new();
    while out.len() < count {
        let c = gw.conversation(users);
        if shard_for(c, 2) == shard {
            out.push(c);
        }
    }
    out
}

fn sockets_are_counted_on_their_owner_shard(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let odd = conversations_on(&gw, &[&alice, &bob], 1, 4);
    let even = conversations_on(&gw, &[&alice, &bob], 0, 3);

    // Only shard 1's conversations: 24 sockets, all on shard 1.
    let mut clients: Vec<Client> = (0..12)
        .flat_map(|i| [gw.connect(odd[i % 4], &alice), gw.connect(odd[i % 4], &bob)])
        .collect();
    eventually_eq(
        WAIT,
        "24 sockets on shard 1, none on shard 0",
        vec![0, 24],
        || gw.connections(),
    );
    let stats = gw.stats();
    assert_eq!(stats.len(), 2, "two shards");
    assert!(
        stats[1].handoffs_in > 0,
        "24 connections and none arrived through shard 0's acceptor? handoffs_in = {:?}",
        stats.iter().map(|s| s.handoffs_in).collect::<Vec<_>>()
    );
    assert_eq!(
        stats[0].handoffs_in, 0,
        "nothing owned by shard 0 was connected yet"
    );

    // Then shard 0's conversations.
    for i in 0..10 {
        clients.push(gw.connect(even[i % 3], &alice));
    }
    eventually_eq(
        WAIT,
        "10 sockets on shard 0, 24 on shard 1",
        vec![10, 24],
        || gw.connections(),
    );
    assert!(
        gw.stats()[0].handoffs_in > 0,
        "none of 10 shard-0 sockets came through shard 1's acceptor"
    );

    // Closing some sockets is reflected on their owner.
    for mut c in clients.drain(24..29) {
        c.close(1000);
        c.expect_close(1000);
    }
    eventually_eq(
        WAIT,
        "5 sockets on shard 0 after closing 5",
        vec![5, 24],
        || gw.connections(),
    );
    drop(clients); // abrupt TCP close of the rest
    eventually_eq(WAIT, "every socket gone", vec![0, 0], || gw.connections());
    assert!(gw.stats().iter().all(|s| s.queued_frames == 0));
}

fn broadcasts_reach_sockets_from_every_acceptor(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let convs = [
        conversations_on(&gw, &[&alice, &bob], 0, 2),
        conversations_on(&gw, &[&alice, &bob], 1, 2),
    ]
    .concat();
    // 6 sockets per conversation, so each conversation very likely has
    // sockets accepted on both shards.
    let mut rooms: Vec<(i64, Vec<Client>)> = convs
        .iter()
        .map(|&c| {
            let sockets = (0..6)
                .map(|i| gw.connect(c, if i % 2 == 0 { &alice } else { &bob }))
                .collect();
            (c, sockets)
        })
        .collect();
    eventually_eq(WAIT, "12 sockets on each shard", vec![12, 12], || {
        gw.connections()
    });
    let handoffs: Vec<u64> = gw.stats().iter().map(|s| s.handoffs_in).collect();
    assert!(
        handoffs.iter().sum::<u64>() > 0,
        "no handoffs among 24 connections: {handoffs:?}"
    );
    for (c, sockets) in rooms.iter_mut() {
        for sender in 0..sockets.len() {
            let content = format!("conv {c} from socket {sender}");
            sockets[sender].chat(&content);
            let user = if sender % 2 == 0 { &alice } else { &bob };
            let first = sockets[0].recv_new_message();
            assert_new_message(&first, user, &content);
            for s in sockets.iter_mut().skip(1) {
                assert_eq!(s.recv_new_message(), first);
            }
            assert_eq!(gw.message_row(first["id"].as_i64().unwrap()).unwrap().0, *c);
        }
    }
    // Nothing crossed between conversations.
    for (_, sockets) in rooms.iter_mut() {
        for s in sockets.iter_mut() {
            s.expect_silence(Duration::from_millis(100));
        }
    }
}
