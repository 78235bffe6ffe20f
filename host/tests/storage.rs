//! Storage against both backends: SQLite in a temp dir and a private PostgreSQL server.
//! Every test runs its body once per backend.

mod common;

use common::postgres::Postgres;
use ludus::storage::{
    Caller, Condition, Leaderboard, Operator, Order, ReadPerm, Storage, StorageConfig,
    StorageError, WriteObject, WritePerm,
};
use std::time::Duration;

/// A store on each backend; the guards keep their files and server alive.
struct Backends {
    pub stores: Vec<(&'static str, Storage, StorageConfig)>,
    pub dir: tempfile::TempDir,
    pub pg: Postgres,
}

async fn backends(db: &str) -> Backends {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start();
    let sqlite_cfg = StorageConfig::default();
    let pg_cfg = StorageConfig {
        url: Some(pg.database(db).await),
        acquire_timeout: Duration::from_secs(2),
        ..StorageConfig::default()
    };
    let sqlite = Storage::open(&sqlite_cfg, dir.path()).await.unwrap();
    let postgres = Storage::open(&pg_cfg, dir.path()).await.unwrap();
    Backends {
        stores: vec![
            ("sqlite", sqlite, sqlite_cfg),
            ("postgres", postgres, pg_cfg),
        ],
        dir,
        pg,
    }
}

fn obj(owner: u64, key: &str, value: &str, condition: Condition) -> WriteObject {
    WriteObject {
        collection: "stats".into(),
        key: key.into(),
        owner,
        value: value.into(),
        condition,
        read: ReadPerm::Owner,
        write: WritePerm::Owner,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_go_ahead_only_at_the_version_they_name() {
    let b = backends("conditional").await;
    for (name, s, _) in &b.stores {
        let me = Caller::Player(7);
        let first = s
            .write_object(me, obj(7, "k", r#"{"wins":1}"#, Condition::Absent))
            .await
            .unwrap();
        assert_eq!(first.version, 1, "{name}");
        let again = s
            .write_object(me, obj(7, "k", r#"{"wins":9}"#, Condition::Absent))
            .await
            .unwrap_err();
        assert!(
            matches!(again, StorageError::Conflict { .. }),
            "{name}: {again:?}"
        );
        let second = s
            .write_object(me, obj(7, "k", r#"{"wins":2}"#, Condition::Version(1)))
            .await
            .unwrap();
        assert_eq!(second.version, 2, "{name}");
        let stale = s
            .write_object(me, obj(7, "k", r#"{"wins":3}"#, Condition::Version(1)))
            .await
            .unwrap_err();
        assert_eq!(
            stale,
            StorageError::Conflict {
                expected: "version 1".into(),
                current: "version 2".into()
            },
            "{name}"
        );
        let missing = s
            .write_object(me, obj(7, "none", "{}", Condition::Version(1)))
            .await
            .unwrap_err();
        assert!(matches!(missing, StorageError::Conflict { .. }), "{name}");
        let last = s
            .write_object(me, obj(7, "k", r#"{"wins":4}"#, Condition::Any))
            .await
            .unwrap();
        assert_eq!(
            (last.version, &last.value["wins"]),
            (3, &serde_json::json!(4)),
            "{name}"
        );
        let read = s.read_object(me, "stats", "k", 7).await.unwrap();
        assert_eq!(read, last, "{name}");
        // Not JSON, or over the size limit: refused with the reason.
        let bad = s
            .write_object(me, obj(7, "bad", "{not json", Condition::Any))
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("not JSON"), "{name}: {bad}");
        let huge = format!("\"{}\"", "x".repeat(70 * 1024));
        let big = s
            .write_object(me, obj(7, "big", &huge, Condition::Any))
            .await
            .unwrap_err();
        assert!(
            matches!(big, StorageError::TooLarge { .. })
                && big.to_string().contains("storage.max_value_bytes"),
            "{name}: {big}"
        );
        assert_eq!(
            s.read_object(me, "stats", "big", 7).await.unwrap_err(),
            StorageError::NotFound
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_reads_and_writes_only_what_the_permissions_allow() {
    let b = backends("permissions").await;
    for (name, s, _) in &b.stores {
        let (alice, bob) = (Caller::Player(1), Caller::Player(2));
        s.write_object(alice, obj(1, "private", r#"{"a":1}"#, Condition::Any))
            .await
            .unwrap();
        // Another player cannot read a private object (it looks absent) ...
        assert_eq!(
            s.read_object(bob, "stats", "private", 1).await.unwrap_err(),
            StorageError::NotFound,
            "{name}"
        );
        // ... write into another's name ...
        let denied = s
            .write_object(bob, obj(1, "private", "{}", Condition::Any))
            .await
            .unwrap_err();
        assert!(
            matches!(denied, StorageError::Denied(_)),
            "{name}: {denied:?}"
        );
        // ... or delete it.
        assert_eq!(
            s.delete_object(bob, "stats", "private", 1, None)
                .await
                .unwrap_err(),
            StorageError::NotFound,
            "{name}"
        );
        // A public object is readable by all, still writable only by its owner.
        let mut public = obj(1, "public", r#"{"p":1}"#, Condition::Any);
        public.read = ReadPerm::Public;
        s.write_object(alice, public).await.unwrap();
        assert_eq!(
            s.read_object(bob, "stats", "public", 1)
                .await
                .unwrap()
                .value["p"],
            1,
            "{name}"
        );
        let denied = s
            .delete_object(bob, "stats", "public", 1, None)
            .await
            .unwrap_err();
        assert!(matches!(denied, StorageError::Denied(_)), "{name}");
        // What the game writes as read-only to players: the owner reads, cannot write
        // or delete; hidden objects are not even readable by their owner.
        let mut locked = obj(1, "locked", r#"{"rank":"gold"}"#, Condition::Any);
        locked.write = WritePerm::None;
        s.write_object(Caller::Game, locked).await.unwrap();
        assert_eq!(
            s.read_object(alice, "stats", "locked", 1)
                .await
                .unwrap()
                .value["rank"],
            "gold"
        );
        for condition in [Condition::Any, Condition::Version(1)] {
            let denied = s
                .write_object(alice, obj(1, "locked", "{}", condition))
                .await
                .unwrap_err();
            assert!(
                matches!(denied, StorageError::Denied(_)),
                "{name}: {denied:?}"
            );
        }
        let denied = s
            .delete_object(alice, "stats", "locked", 1, None)
            .await
            .unwrap_err();
        assert!(matches!(denied, StorageError::Denied(_)), "{name}");
        let mut hidden = obj(1, "hidden", "{}", Condition::Any);
        hidden.read = ReadPerm::None;
        hidden.write = WritePerm::None;
        s.write_object(Caller::Game, hidden).await.unwrap();
        assert_eq!(
            s.read_object(alice, "stats", "hidden", 1)
                .await
                .unwrap_err(),
            StorageError::NotFound
        );
        assert!(
            s.read_object(Caller::Game, "stats", "hidden", 1)
                .await
                .is_ok()
        );
        // Listing shows each caller only what they may read.
        let (seen, _) = s.list_objects(bob, "stats", None, 100, None).await.unwrap();
        let keys: Vec<&str> = seen.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["public"], "{name}");
        let (seen, _) = s
            .list_objects(alice, "stats", None, 100, None)
            .await
            .unwrap();
        let keys: Vec<&str> = seen.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["locked", "private", "public"], "{name}");
        // The owner deletes their own, at the right version only.
        let stale = s
            .delete_object(alice, "stats", "private", 1, Some(5))
            .await
            .unwrap_err();
        assert!(matches!(stale, StorageError::Conflict { .. }), "{name}");
        s.delete_object(alice, "stats", "private", 1, Some(1))
            .await
            .unwrap();
        assert_eq!(
            s.read_object(alice, "stats", "private", 1)
                .await
                .unwrap_err(),
            StorageError::NotFound
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_lists_in_pages_that_neither_skip_nor_repeat() {
    let b = backends("listing").await;
    for (name, s, _) in &b.stores {
        for owner in 1..=3u64 {
            for key in ["a", "b", "c"] {
                let mut w = obj(owner, key, &format!(r#"{{"o":{owner}}}"#), Condition::Any);
                w.read = ReadPerm::Public;
                s.write_object(Caller::Game, w).await.unwrap();
            }
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = s
                .list_objects(Caller::Player(9), "stats", None, 4, cursor.as_deref())
                .await
                .unwrap();
            assert!(page.len() <= 4);
            seen.extend(page.into_iter().map(|o| (o.owner, o.key)));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 9, "{name}: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen, "{name}: in order, no repeats");
        let (mine, _) = s
            .list_objects(Caller::Player(2), "stats", Some(2), 10, None)
            .await
            .unwrap();
        assert!(
            mine.iter().all(|o| o.owner == 2) && mine.len() == 3,
            "{name}"
        );
        let bad = s
            .list_objects(Caller::Game, "stats", None, 4, Some("zz"))
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("cursor"), "{name}");
    }
}

fn board(id: &str, order: Order, operator: Operator) -> Leaderboard {
    Leaderboard {
        id: id.into(),
        order,
        operator,
        reset_every: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_rank_by_order_operator_and_ties_and_page_by_cursor() {
    let b = backends("boards").await;
    for (name, s, _) in &b.stores {
        // Best, descending: a worse score later does not lower a record.
        s.define_leaderboard(&board("wins", Order::Descending, Operator::Best))
            .await
            .unwrap();
        s.submit_score("wins", 1, "ann", 10, 0, None).await.unwrap();
        s.submit_score("wins", 2, "bob", 30, 0, None).await.unwrap();
        s.submit_score("wins", 3, "cat", 20, 0, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // A tie with cat, later: ranks after cat.
        s.submit_score("wins", 4, "dan", 20, 0, None).await.unwrap();
        // A tie with a better subscore: ranks before both.
        s.submit_score("wins", 5, "eve", 20, 5, None).await.unwrap();
        let kept = s
            .submit_score("wins", 2, "bob", 1, 0, Some(r#"{"note":"bad day"}"#))
            .await
            .unwrap();
        assert_eq!(
            (kept.score, kept.rank, kept.submissions),
            (30, 1, 2),
            "{name}"
        );
        assert_eq!(
            kept.metadata,
            serde_json::json!({}),
            "{name}: a worse run keeps the metadata"
        );
        let (top, next) = s.top("wins", 10, None).await.unwrap();
        let order: Vec<(u64, u64)> = top.iter().map(|r| (r.rank, r.owner)).collect();
        assert_eq!(order, [(1, 2), (2, 5), (3, 3), (4, 4), (5, 1)], "{name}");
        assert!(next.is_none());
        // Pages of two give the same order and ranks.
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = s.top("wins", 2, cursor.as_deref()).await.unwrap();
            paged.extend(page.iter().map(|r| (r.rank, r.owner)));
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(paged, order, "{name}");
        // Around a player and a player's own rank.
        let around: Vec<u64> = s
            .around("wins", 3, 3)
            .await
            .unwrap()
            .iter()
            .map(|r| r.owner)
            .collect();
        assert_eq!(around, [5, 3, 4], "{name}");
        let around: Vec<u64> = s
            .around("wins", 2, 3)
            .await
            .unwrap()
            .iter()
            .map(|r| r.owner)
            .collect();
        assert_eq!(around, [2, 5, 3], "{name}: the first has nobody above");
        assert_eq!(s.rank_of("wins", 4).await.unwrap().rank, 4, "{name}");
        assert_eq!(
            s.rank_of("wins", 99).await.unwrap_err(),
            StorageError::NotFound
        );

        // Ascending + set: the lowest time wins and a new run replaces the old.
        s.define_leaderboard(&board("laps", Order::Ascending, Operator::Set))
            .await
            .unwrap();
        s.submit_score("laps", 1, "ann", 90, 0, None).await.unwrap();
        s.submit_score("laps", 2, "bob", 80, 0, None).await.unwrap();
        let set = s.submit_score("laps", 2, "bob", 95, 0, None).await.unwrap();
        assert_eq!((set.score, set.rank), (95, 2), "{name}");

        // Increment adds.
        s.define_leaderboard(&board("coins", Order::Descending, Operator::Increment))
            .await
            .unwrap();
        s.submit_score("coins", 1, "ann", 5, 1, None).await.unwrap();
        let sum = s.submit_score("coins", 1, "ann", 7, 1, None).await.unwrap();
        assert_eq!((sum.score, sum.subscore), (12, 2), "{name}");

        // An unknown board, bad metadata.
        assert_eq!(
            s.submit_score("nope", 1, "ann", 1, 0, None)
                .await
                .unwrap_err(),
            StorageError::NotFound
        );
        let bad = s
            .submit_score("wins", 1, "ann", 1, 0, Some("{"))
            .await
            .unwrap_err();
        assert!(bad.to_string().contains("metadata"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaderboard_that_resets_counts_only_the_current_period() {
    let b = backends("resets").await;
    for (name, s, _) in &b.stores {
        let mut daily = board("daily", Order::Descending, Operator::Increment);
        daily.reset_every = Some(Duration::from_secs(1));
        s.define_leaderboard(&daily).await.unwrap();
        // Start right after a period boundary, so both submissions share a period.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(
            1000 - now.subsec_millis() as u64 + 20,
        ))
        .await;
        s.submit_score("daily", 1, "ann", 5, 0, None).await.unwrap();
        let r = s.submit_score("daily", 1, "ann", 5, 0, None).await.unwrap();
        assert_eq!(r.score, 10, "{name}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            s.top("daily", 10, None).await.unwrap().0.is_empty(),
            "{name}"
        );
        let fresh = s.submit_score("daily", 1, "ann", 5, 0, None).await.unwrap();
        assert_eq!((fresh.score, fresh.submissions), (5, 1), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_secret_keeps_its_player_id_and_data_survives_a_reopen() {
    let b = backends("reopen").await;
    for (name, s, cfg) in &b.stores {
        let id = s
            .device_player("a device secret of length", "ann", 4242)
            .await
            .unwrap();
        assert_eq!(id, 4242, "{name}");
        let again = s
            .device_player("a device secret of length", "ann", 777)
            .await
            .unwrap();
        assert_eq!(again, 4242, "{name}: the same secret, the same player");
        let short = s.device_player("short", "ann", 1).await.unwrap_err();
        assert!(short.to_string().contains("16"), "{name}: {short}");
        s.write_object(
            Caller::Player(id),
            obj(id, "k", r#"{"kept":true}"#, Condition::Any),
        )
        .await
        .unwrap();
        s.close().await;
        let reopened = Storage::open(cfg, b.dir.path()).await.unwrap();
        assert_eq!(
            reopened
                .device_player("a device secret of length", "ann", 1)
                .await
                .unwrap(),
            4242,
            "{name}"
        );
        let kept = reopened
            .read_object(Caller::Player(id), "stats", "k", id)
            .await
            .unwrap();
        assert_eq!(kept.value["kept"], true, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_ludus_is_refused_with_a_clear_message() {
    let b = backends("newer").await;
    for (name, s, cfg) in &b.stores {
        let newer = Storage::schema_version() + 1;
        s.close().await;
        // Mark the schema as written by a newer version, through a plain connection.
        let url = cfg
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", b.dir.path().join("ludus.db").display()));
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, 'from the future', TRUE, $2, 0)",
        )
        .bind(newer)
        .bind(vec![0u8; 48])
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let error = Storage::open(cfg, b.dir.path()).await.unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("newer Ludus") && error.contains(&newer.to_string()),
            "{name}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_while_postgresql_is_down_and_work_again_when_it_is_back() {
    let mut b = backends("outage").await;
    let (_, s, _) = b.stores.pop().unwrap();
    s.write_object(Caller::Game, obj(1, "before", r#"{"n":1}"#, Condition::Any))
        .await
        .unwrap();
    b.pg.stop();
    let started = std::time::Instant::now();
    let error = s
        .write_object(Caller::Game, obj(1, "during", "{}", Condition::Any))
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the call failed only after {:?}",
        started.elapsed()
    );
    b.pg.resume();
    common::eventually(Duration::from_secs(20), "calls work again", async || {
        s.write_object(Caller::Game, obj(1, "after", "{}", Condition::Any))
            .await
            .is_ok()
    })
    .await;
    let kept = s
        .read_object(Caller::Game, "stats", "before", 1)
        .await
        .unwrap();
    assert_eq!(
        kept.value["n"], 1,
        "what was acknowledged before the outage is there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_writes_commits_together_and_answers_each_write() {
    let b = backends("batch").await;
    for (name, s, _) in &b.stores {
        s.write_object(Caller::Game, obj(1, "taken", "{}", Condition::Any))
            .await
            .unwrap();
        let results = s
            .write_objects(
                Caller::Game,
                vec![
                    obj(1, "a", r#"{"n":1}"#, Condition::Any),
                    obj(1, "taken", r#"{"n":2}"#, Condition::Absent),
                    obj(2, "b", r#"{"n":3}"#, Condition::Absent),
                ],
            )
            .await
            .unwrap();
        assert_eq!(results.len(), 3, "{name}");
        assert!(
            results[0].is_ok() && results[2].is_ok(),
            "{name}: {results:?}"
        );
        assert!(
            matches!(results[1], Err(StorageError::Conflict { .. })),
            "{name}: {results:?}"
        );
        assert_eq!(
            s.read_object(Caller::Game, "stats", "b", 2)
                .await
                .unwrap()
                .value["n"],
            3,
            "{name}"
        );
        assert_eq!(
            s.read_object(Caller::Game, "stats", "taken", 1)
                .await
                .unwrap()
                .value,
            serde_json::json!({}),
            "{name}: the refused write left the object alone"
        );
    }
}

/// A batch runs on the one connection that holds its transaction: with a pool of one
/// connection it still goes through (it used to wait for a second connection and time
/// out), and concurrent batches on a small pool all commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_on_their_own_connection_even_with_a_pool_of_one() {
    let b = backends("own_connection").await;
    for (name, _, cfg) in &b.stores {
        let small = StorageConfig {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(2),
            ..cfg.clone()
        };
        let s = Storage::open(&small, b.dir.path()).await.unwrap();
        let results = s
            .write_objects(
                Caller::Game,
                vec![
                    obj(3, "one", r#"{"n":1}"#, Condition::Any),
                    obj(3, "two", r#"{"n":2}"#, Condition::Absent),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: a batch on a pool of one failed: {e}"));
        assert!(results.iter().all(Result::is_ok), "{name}: {results:?}");

        let batches = (0..8u64).map(|i| {
            let s = s.clone();
            async move {
                s.write_objects(
                    Caller::Game,
                    vec![
                        obj(10 + i, "a", r#"{"n":1}"#, Condition::Any),
                        obj(10 + i, "b", r#"{"n":2}"#, Condition::Any),
                    ],
                )
                .await
            }
        });
        for result in futures_util::future::join_all(batches).await {
            let results = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(results.iter().all(Result::is_ok), "{name}: {results:?}");
        }
        for i in 0..8u64 {
            assert_eq!(
                s.read_object(Caller::Game, "stats", "b", 10 + i)
                    .await
                    .unwrap()
                    .value["n"],
                2,
                "{name}"
            );
        }
        s.close().await;
    }
}

/// Rooms on `s` with tictactoe installed.
async fn tictactoe_rooms(s: &Storage) -> ludus::rooms::Rooms {
    let rt = ludus::runtime::Runtime::new(ludus::runtime::RuntimeLimits {
        max_instances: 8,
        ..Default::default()
    })
    .unwrap();
    let cfg = ludus::rooms::RoomsConfig {
        workers: 1,
        ..Default::default()
    };
    let storage = ludus::rooms::RoomStorage::new(s.clone());
    let rooms = ludus::rooms::Rooms::with_storage(rt, cfg, Some(storage)).unwrap();
    common::install(&rooms, "tictactoe").await;
    rooms
}

/// A tictactoe game where player 10 (X) beats player 20 along the top row; every move
/// is answered.
async fn x_wins(
    rooms: &ludus::rooms::Rooms,
) -> (ludus::rooms::RoomHandle, common::Player, common::Player) {
    let room = common::room(rooms, "tictactoe").await;
    let mut x = common::join(&room, 10).await;
    let o = common::join(&room, 20).await;
    let mv = |cell: i64| serde_json::to_vec(&serde_json::json!({ "cell": cell })).unwrap();
    for (player, cell) in [(10, 0), (20, 3), (10, 1), (20, 4), (10, 2)] {
        room.message(player, mv(cell));
    }
    let end = x
        .until(Duration::from_secs(5), |m| m["winner"].is_u64())
        .await;
    assert_eq!(end["board"], "XXXOO....");
    (room, x, o)
}

/// A real game keeps its data through the contract's storage: tictactoe reads each
/// player's record, writes it back at the version it read (its writes of one tick in
/// one transaction), counts the win on its leaderboard, and tells each player their
/// record, on both backends; a second game adds to the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tictactoe_keeps_each_players_record_and_the_winners_wins() {
    let b = backends("tictactoe").await;
    for (name, s, _) in &b.stores {
        let rooms = tictactoe_rooms(s).await;
        let wait = Duration::from_secs(10);
        for game in 1..=2u64 {
            let (room, mut x, mut o) = x_wins(&rooms).await;
            let mine = x.until(wait, |m| m.get("stats").is_some()).await;
            assert_eq!(
                mine["stats"],
                serde_json::json!({ "wins": game, "losses": 0, "draws": 0 }),
                "{name}: game {game}"
            );
            let theirs = o.until(wait, |m| m.get("stats").is_some()).await;
            assert_eq!(theirs["stats"]["losses"], game, "{name}: game {game}");
            room.close("done").await;
        }
        // What the game wrote, as storage and other players see it.
        let record = s
            .read_object(Caller::Player(20), "tictactoe.stats", "record", 10)
            .await
            .unwrap_or_else(|e| panic!("{name}: X's record is public: {e}"));
        assert_eq!(record.value["wins"], 2, "{name}");
        assert_eq!(record.version, 2, "{name}: written once per game");
        common::eventually(wait, "the second win is on the board", async || {
            s.top("tictactoe.wins", 10, None)
                .await
                .is_ok_and(|(top, _)| top.len() == 1 && top[0].owner == 10 && top[0].score == 2)
        })
        .await;
        let (top, _) = s.top("tictactoe.wins", 10, None).await.unwrap();
        assert_eq!(
            top[0].username, "player-10",
            "{name}: the member's name is kept"
        );
        rooms.shutdown("test over");
    }
}

/// With PostgreSQL stopped, a game's rooms play on (moves answered, ticks on time) and
/// its storage requests fail; what was acknowledged before is kept, and once the
/// database is back the game's records go on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_play_on_while_postgresql_is_down_and_their_data_is_kept() {
    let mut b = backends("room_outage").await;
    let (_, s, _) = b.stores.pop().unwrap();
    let rooms = tictactoe_rooms(&s).await;
    let wait = Duration::from_secs(10);
    let (room, mut x, _o) = x_wins(&rooms).await;
    assert_eq!(
        x.until(wait, |m| m.get("stats").is_some()).await["stats"]["wins"],
        1
    );
    room.close("done").await;

    b.pg.stop();
    let (room, mut x, _o) = x_wins(&rooms).await;
    let ticks = room.ticks();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        room.ticks() >= ticks + 3,
        "the room ticks on at 1 Hz while storage is down ({} -> {})",
        ticks,
        room.ticks()
    );
    while let Some(event) = x.rx.try_recv() {
        if let ludus::rooms::RoomEvent::Message { bytes, .. } = event {
            let msg: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(
                msg.get("stats").is_none(),
                "no record without storage: {msg}"
            );
        }
    }
    room.close("done").await;

    b.pg.resume();
    common::eventually(Duration::from_secs(20), "storage is back", async || {
        s.read_object(Caller::Game, "tictactoe.stats", "record", 10)
            .await
            .is_ok()
    })
    .await;
    let (_room, mut x, _o) = x_wins(&rooms).await;
    let mine = x.until(wait, |m| m.get("stats").is_some()).await;
    assert_eq!(
        mine["stats"]["wins"], 2,
        "the acknowledged first win was kept; the game in the outage was not recorded"
    );
    rooms.shutdown("test over");
}

/// Sends one message of requests to a keeper room and reads one answer per request.
async fn keeper_ask(
    room: &ludus::rooms::RoomHandle,
    player: &mut common::Player,
    requests: serde_json::Value,
) -> Vec<serde_json::Value> {
    let n = requests.as_array().map_or(1, Vec::len);
    room.message(player.id, serde_json::to_vec(&requests).unwrap());
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(
            player
                .until(Duration::from_secs(10), |m| m.get("op").is_some())
                .await,
        );
    }
    answers
}

/// Every storage function of the contract, from a real guest, on both backends: a
/// tick's writes in one transaction with an answer each (a conflict among them leaves
/// the others be), conditional writes and deletes, lists by cursor, leaderboards, and
/// the size and name limits as errors the game can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_uses_every_storage_function_through_the_contract() {
    use serde_json::json;
    let b = backends("keeper").await;
    for (name, s, _) in &b.stores {
        let rt = ludus::runtime::Runtime::new(ludus::runtime::RuntimeLimits {
            max_instances: 8,
            ..Default::default()
        })
        .unwrap();
        let cfg = ludus::rooms::RoomsConfig {
            workers: 1,
            ..Default::default()
        };
        let storage = ludus::rooms::RoomStorage::new(s.clone());
        let rooms = ludus::rooms::Rooms::with_storage(rt, cfg, Some(storage)).unwrap();
        common::install(&rooms, "keeper").await;
        let room = common::room_with(&rooms, "keeper", Some(r#"{"hz": 50}"#)).await;
        let mut p = common::join(&room, 1).await;

        // One message, one tick: three writes in one transaction, each answered.
        let w = |key: &str, n: i64, version: Option<u64>| {
            json!({ "op": "write", "collection": "c", "key": key, "owner": 1,
                    "value": { "n": n }, "version": version, "public": true })
        };
        let a = keeper_ask(
            &room,
            &mut p,
            json!([w("a", 1, Some(0)), w("b", 2, None), w("a", 3, Some(0))]),
        )
        .await;
        assert_eq!(a[0]["ok"]["version"], 1, "{name}: {a:?}");
        assert_eq!(a[1]["ok"]["value"]["n"], 2, "{name}: {a:?}");
        assert!(
            a[2]["error"].as_str().unwrap().starts_with("conflict"),
            "{name}: only if absent, after the first write of the same tick: {a:?}"
        );
        assert_eq!(
            s.read_object(Caller::Player(2), "c", "a", 1)
                .await
                .unwrap()
                .value["n"],
            1,
            "{name}: committed, public"
        );

        let a = keeper_ask(
            &room,
            &mut p,
            json!([
                { "op": "read", "collection": "c", "key": "a", "owner": 1 },
                w("a", 4, Some(1)),
                w("a", 5, Some(1)),
            ]),
        )
        .await;
        assert_eq!(
            a[0]["ok"]["value"]["n"], 4,
            "{name}: a tick's writes go first, then its reads: {a:?}"
        );
        assert_eq!(a[1]["ok"]["version"], 2, "{name}: {a:?}");
        assert!(
            a[2]["error"].as_str().unwrap().starts_with("conflict"),
            "{name}: {a:?}"
        );

        // Lists page by cursor.
        let a = keeper_ask(
            &room,
            &mut p,
            json!({ "op": "list", "collection": "c", "owner": 1, "limit": 1 }),
        )
        .await;
        assert_eq!(a[0]["ok"]["objects"][0]["key"], "a", "{name}: {a:?}");
        let cursor = a[0]["ok"]["cursor"].as_str().unwrap().to_owned();
        let a = keeper_ask(
            &room,
            &mut p,
            json!({ "op": "list", "collection": "c", "owner": 1, "limit": 1, "cursor": cursor }),
        )
        .await;
        assert_eq!(a[0]["ok"]["objects"][0]["key"], "b", "{name}: {a:?}");
        assert!(a[0]["ok"]["cursor"].is_null(), "{name}: the last page");

        // Deletes: at a stale version refused, then done, then gone.
        let del = |version: Option<u64>| json!({ "op": "delete", "collection": "c", "key": "b", "owner": 1, "version": version });
        let a = keeper_ask(
            &room,
            &mut p,
            json!([
                del(Some(9)),
                del(None),
                { "op": "read", "collection": "c", "key": "b", "owner": 1 }
            ]),
        )
        .await;
        assert!(
            a[0]["error"].as_str().unwrap().starts_with("conflict"),
            "{name}: {a:?}"
        );
        assert_eq!(a[1]["ok"], json!({}), "{name}: {a:?}");
        assert_eq!(a[2]["error"], "not_found", "{name}: {a:?}");

        // A leaderboard the game makes: ascending, best score kept.
        let submit = |player: u64, score: i64| json!({ "op": "submit", "board": "laps", "player": player, "score": score });
        let a = keeper_ask(
            &room,
            &mut p,
            json!([
                { "op": "define", "board": "laps", "order": "asc", "operator": "best" },
                submit(1, 50),
                submit(2, 30),
                submit(3, 40),
                submit(1, 60),
            ]),
        )
        .await;
        assert!(a.iter().all(|a| a.get("ok").is_some()), "{name}: {a:?}");
        assert_eq!(a[4]["ok"]["score"], 50, "{name}: the best (lowest) is kept");
        let a = keeper_ask(
            &room,
            &mut p,
            json!([
                { "op": "top", "board": "laps", "limit": 10 },
                { "op": "around", "board": "laps", "player": 3, "limit": 1 },
                { "op": "top", "board": "no-such-board" },
            ]),
        )
        .await;
        let players: Vec<u64> = a[0]["ok"]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["player"].as_u64().unwrap())
            .collect();
        assert_eq!(players, [2, 3, 1], "{name}: {a:?}");
        assert_eq!(
            a[0]["ok"]["scores"][0]["name"], "",
            "{name}: 2 is no member"
        );
        assert_eq!(a[1]["ok"]["scores"][0]["player"], 3, "{name}: {a:?}");
        assert_eq!(a[1]["ok"]["scores"][0]["rank"], 2, "{name}: {a:?}");
        assert_eq!(a[2]["error"], "not_found", "{name}: {a:?}");

        // Limits come back as errors the game can read; the room goes on.
        let big = "x".repeat(70 * 1024);
        let a = keeper_ask(
            &room,
            &mut p,
            json!([
                { "op": "write", "collection": "c", "key": "big", "value": big },
                { "op": "write", "collection": "", "key": "k", "value": 1 },
            ]),
        )
        .await;
        assert_eq!(a[0]["error"], "too_large", "{name}: {a:?}");
        assert!(
            a[1]["error"].as_str().unwrap().starts_with("invalid"),
            "{name}: {a:?}"
        );
        rooms.shutdown("test over");
    }
}

/// `ludus bench storage` runs in both modes and reports writes that were answered.
#[test]
fn the_storage_benchmark_writes_and_reports_from_writers_and_from_rooms() {
    for args in [
        &["--writers", "4", "--batch", "4", "--duration", "1s"][..],
        &["--rooms", "4", "--writes-per-tick", "2", "--duration", "1s"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ludus"))
            .args(["bench", "storage"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("{args:?}: no JSON line in {text}"));
        assert!(report["writes"].as_u64().unwrap() > 0, "{args:?}: {report}");
        assert_eq!(report["errors"], 0, "{args:?}: {report}");
    }
}
