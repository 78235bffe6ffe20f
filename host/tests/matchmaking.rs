//! The matchmaker on a single node (in-process leader), through real WebSocket clients.
//! The cluster cases (three nodes, a leader killed) are in tests/cluster.rs.

mod common;

use common::serve;
use ludus::client::{Client, ClientOptions};
use ludus::gateway::pb::server_frame::Body as Out;
use ludus::gateway::pb::{ErrorCode, MatchFound};
use ludus::matchmaking::MatchRules;
use ludus::server::Server;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn node(rules: MatchRules) -> (Server, tempfile::TempDir) {
    serve(&["arena"], move |c| {
        c.matchmaking.games.insert("arena".into(), rules);
    })
    .await
}

fn rules(min: u32, max: u32, wait: Duration) -> MatchRules {
    MatchRules {
        min_players: min,
        max_players: max,
        wait,
    }
}

/// The next frame that is not a room message.
async fn next_answer(c: &mut Client) -> Out {
    common::next_answer(c, WAIT).await
}

async fn queued(c: &mut Client) -> String {
    match next_answer(c).await {
        Out::MatchQueued(q) => q.ticket_id,
        other => panic!("expected match_queued, got {other:?}"),
    }
}

async fn found(c: &mut Client) -> MatchFound {
    match next_answer(c).await {
        Out::MatchFound(f) => f,
        other => panic!("expected match_found, got {other:?}"),
    }
}

async fn players(server: &Server, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        let c = Client::guest(server.addr, &format!("p{i}"), ClientOptions::default())
            .await
            .unwrap();
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rooms_are_made_as_soon_as_enough_players_ask_and_everyone_can_join() {
    let (server, _dir) = node(rules(4, 4, Duration::from_secs(60))).await;
    let mut clients = players(&server, 8).await;
    let mut tickets = Vec::new();
    for c in &mut clients {
        c.find_match("arena", "duel", &[]).await.unwrap();
        tickets.push(queued(c).await);
    }
    let mut rooms: BTreeMap<String, usize> = BTreeMap::new();
    for (c, ticket) in clients.iter_mut().zip(&tickets) {
        let f = found(c).await;
        assert_eq!(&f.ticket_id, ticket);
        assert_eq!(
            (f.game.as_str(), f.mode.as_str(), f.players),
            ("arena", "duel", 4)
        );
        *rooms.entry(f.room_id.clone()).or_default() += 1;
        c.join(&f.room_id).await.unwrap();
        match next_answer(c).await {
            Out::Joined(j) => assert_eq!(j.room_id, f.room_id),
            other => panic!("joining the matched room: {other:?}"),
        }
    }
    assert_eq!(
        rooms.values().copied().collect::<Vec<_>>(),
        [4, 4],
        "{rooms:?}"
    );
    for room in rooms.keys() {
        assert_eq!(server.rooms.get(room).unwrap().info().seats, 4);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_and_properties_keep_queues_apart_and_a_short_room_starts_after_the_wait() {
    let (server, _dir) = node(rules(2, 8, Duration::from_millis(300))).await;
    let mut clients = players(&server, 5).await;
    let asks: [(&str, &[(&str, &str)]); 5] = [
        ("ffa", &[("region", "eu")]),
        ("ffa", &[("region", "us")]),
        ("ffa", &[("region", "eu")]),
        ("ffa", &[("region", "us")]),
        ("ffa", &[("region", "eu")]),
    ];
    let started = std::time::Instant::now();
    for (c, (mode, props)) in clients.iter_mut().zip(asks) {
        c.find_match("arena", mode, props).await.unwrap();
        queued(c).await;
    }
    let mut room_of = Vec::new();
    for c in &mut clients {
        let f = found(c).await;
        room_of.push((f.room_id, f.players));
    }
    // Not full (8), so the rooms started only once the oldest ticket waited 300 ms.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let eu = [&room_of[0], &room_of[2], &room_of[4]];
    let us = [&room_of[1], &room_of[3]];
    assert!(eu.iter().all(|r| r.0 == eu[0].0 && r.1 == 3), "{room_of:?}");
    assert!(us.iter().all(|r| r.0 == us[0].0 && r.1 == 2), "{room_of:?}");
    assert_ne!(eu[0].0, us[0].0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_per_player_cancel_works_and_bad_requests_are_refused_by_name() {
    let (server, _dir) = node(rules(2, 2, Duration::from_secs(60))).await;
    let mut clients = players(&server, 3).await;
    let (quitter, rest) = clients.split_first_mut().unwrap();

    // Nothing to cancel yet; an unknown game; an oversized mode.
    quitter.cancel_match().await.unwrap();
    match next_answer(quitter).await {
        Out::Error(e) => assert_eq!(e.code, ErrorCode::NoTicket as i32, "{e:?}"),
        other => panic!("{other:?}"),
    }
    quitter.find_match("chess", "", &[]).await.unwrap();
    match next_answer(quitter).await {
        Out::Error(e) => {
            assert_eq!(e.code, ErrorCode::NoSuchGame as i32);
            assert!(e.message.contains("chess"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    quitter
        .find_match("arena", &"x".repeat(100), &[])
        .await
        .unwrap();
    match next_answer(quitter).await {
        Out::Error(e) => assert!(e.message.contains("mode"), "{}", e.message),
        other => panic!("{other:?}"),
    }

    // A ticket, then a second ask while it waits: refused.
    quitter.find_match("arena", "", &[]).await.unwrap();
    let ticket = queued(quitter).await;
    quitter.find_match("arena", "", &[]).await.unwrap();
    match next_answer(quitter).await {
        Out::Error(e) => assert!(e.message.contains(&ticket), "{}", e.message),
        other => panic!("{other:?}"),
    }
    quitter.cancel_match().await.unwrap();
    match next_answer(quitter).await {
        Out::MatchCancelled(c) => assert_eq!(c.ticket_id, ticket),
        other => panic!("{other:?}"),
    }

    // The two others are matched with each other, not with the cancelled ticket.
    let mut rooms = Vec::new();
    for c in rest.iter_mut() {
        c.find_match("arena", "", &[]).await.unwrap();
        queued(c).await;
    }
    for c in rest.iter_mut() {
        let f = found(c).await;
        assert_eq!(f.players, 2);
        rooms.push(f.room_id);
    }
    assert_eq!(rooms[0], rooms[1]);
    // The quitter hears nothing more about its ticket.
    let quiet = tokio::time::timeout(Duration::from_millis(300), quitter.recv()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_no_room_could_be_made_from_refuse_to_start() {
    let mut config = ludus::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config
        .matchmaking
        .games
        .insert("arena".into(), rules(5, 3, Duration::from_secs(1)));
    let err = ludus::server::start(config).await.err().expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("arena") && text.contains("min_players"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matched_room_closes_when_its_players_never_come_or_all_leave() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.matchmaking
            .games
            .insert("arena".into(), rules(2, 2, Duration::from_secs(60)));
        c.matchmaking.empty_room_grace = Duration::from_millis(300);
    })
    .await;
    let mut clients = players(&server, 4).await;
    for c in &mut clients {
        c.find_match("arena", "", &[]).await.unwrap();
        queued(c).await;
    }
    let mut rooms = Vec::new();
    for c in &mut clients {
        rooms.push(found(c).await.room_id);
    }
    let (abandoned, played) = (rooms[0].clone(), rooms[2].clone());
    assert_ne!(abandoned, played);
    // The second pair joins, plays past the grace period, then leaves.
    for c in &mut clients[2..] {
        c.join(&played).await.unwrap();
        assert!(matches!(next_answer(c).await, Out::Joined(_)));
    }
    common::eventually(WAIT, "the room nobody joined closes", async || {
        server.rooms.get(&abandoned).is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.rooms.get(&played).is_some(),
        "a room with players stays"
    );
    for c in &mut clients[2..] {
        c.send(ludus::gateway::pb::client_frame::Body::Leave(
            ludus::gateway::pb::LeaveRoom {
                room_id: played.clone(),
            },
        ))
        .await
        .unwrap();
    }
    common::eventually(WAIT, "the room all left closes", async || {
        server.rooms.get(&played).is_none()
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matched_seat_is_held_for_its_player_until_they_join_or_the_grace_ends() {
    let (server, _dir) = serve(&["arena"], |c| {
        c.matchmaking
            .games
            .insert("arena".into(), rules(2, 2, Duration::from_secs(60)));
        c.matchmaking.empty_room_grace = Duration::from_secs(2);
    })
    .await;
    let mut matched = players(&server, 2).await;
    for c in &mut matched {
        c.find_match("arena", "duel", &[]).await.unwrap();
        queued(c).await;
    }
    let room = found(&mut matched[0]).await.room_id;
    assert_eq!(found(&mut matched[1]).await.room_id, room);
    let placed = std::time::Instant::now();
    let mut intruder = Client::guest(server.addr, "intruder", ClientOptions::default())
        .await
        .unwrap();
    let refused = async |c: &mut Client| {
        c.join(&room).await.unwrap();
        match next_answer(c).await {
            Out::Error(e) => {
                assert_eq!(e.code, ErrorCode::Refused as i32);
                assert!(e.message.contains("held"), "{}", e.message);
            }
            other => panic!("expected the join to be refused, got {other:?}"),
        }
    };
    // Both seats are held: nobody else gets in, before or after one player came.
    refused(&mut intruder).await;
    matched[0].join(&room).await.unwrap();
    assert!(matches!(next_answer(&mut matched[0]).await, Out::Joined(_)));
    refused(&mut intruder).await;
    // The other player never comes: after the grace the seat is free.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(placed.elapsed())).await;
    intruder.join(&room).await.unwrap();
    assert!(matches!(next_answer(&mut intruder).await, Out::Joined(_)));
    server.stop().await;
}
