//! The designer console of `ludus dev`, on the admin port at `/dev` (`web/dev.html`): for
//! any game, the node's rooms, one room's players, state (its last save, as JSON when it
//! is JSON) and recent messages in and out, the swap log, and the builds with the
//! compiler's errors. Only `ludus dev` turns it on (`admin.designer_console`); it needs
//! no token, so it is for a designer's own machine with the admin port on loopback.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Mutex;

use super::admin::Admin;
use crate::lock::Recover;

/// Builds kept for the console.
const BUILDS: usize = 20;

/// One build of the game under `ludus dev`.
#[derive(Clone, Debug, Serialize)]
pub struct BuildRecord {
    /// When it finished, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub ok: bool,
    pub took_ms: u64,
    /// What came of it: `swapped live: ...`, `installed ...`, or the first line of the
    /// error.
    pub summary: String,
    /// The compiler's output when the build failed.
    pub output: String,
}

/// What `ludus dev` tells the console.
#[derive(Default)]
pub struct Designer {
    game: Mutex<String>,
    play_url: Mutex<String>,
    builds: Mutex<VecDeque<BuildRecord>>,
}

impl Designer {
    /// The game being designed, and where its page is.
    pub fn set_game(&self, game: &str, play_url: &str) {
        *self.game.lock().recover() = game.to_owned();
        *self.play_url.lock().recover() = play_url.to_owned();
    }

    /// Records a build: `Ok(summary)` or `Err(compiler output)`.
    pub fn record_build(&self, took: std::time::Duration, result: Result<String, String>) {
        let (ok, summary, output) = match result {
            Ok(summary) => (true, summary, String::new()),
            Err(output) => {
                let first = output.lines().next().unwrap_or_default().to_owned();
                (false, first, output)
            }
        };
        let record = BuildRecord {
            at_ms: unix_ms(),
            ok,
            took_ms: took.as_millis() as u64,
            summary,
            output,
        };
        let mut builds = self.builds.lock().recover();
        if builds.len() == BUILDS {
            builds.pop_back();
        }
        builds.push_front(record);
    }

    fn builds(&self) -> Vec<BuildRecord> {
        self.builds.lock().recover().iter().cloned().collect()
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn routes() -> axum::Router<Admin> {
    axum::Router::new()
        .route("/dev", get(page))
        .route("/dev/api/console", get(console))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../../web/dev.html"))
}

#[derive(Deserialize)]
struct ConsoleQuery {
    #[serde(default)]
    room: String,
}

/// Everything the page shows, in one answer.
async fn console(State(admin): State<Admin>, Query(q): Query<ConsoleQuery>) -> Response {
    let Some(designer) = admin.designer.clone() else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "the designer console runs under `ludus dev`",
        )
            .into_response();
    };
    let rooms: Vec<Value> = admin
        .rooms
        .list()
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "game": r.game, "version": r.version, "players": r.members,
                "restarts": r.restarts, "last_error": r.last_error,
            })
        })
        .collect();
    let room = match admin.rooms.get(&q.room) {
        Some(handle) => Some(room(&admin, handle).await),
        None => None,
    };
    let game = designer.game.lock().recover().clone();
    let play_url = designer.play_url.lock().recover().clone();
    Json(json!({
        "game": game,
        "play_url": play_url,
        "builds": designer.builds(),
        "swaps": admin.rooms.swap_log(),
        "rooms": rooms,
        "room": room,
    }))
    .into_response()
}

/// One room: its players, its state as last saved, its recent messages.
async fn room(admin: &Admin, handle: crate::rooms::RoomHandle) -> Value {
    let info = handle.info();
    let (state, saved_ms, note) = match admin.storage.saved_room(handle.id()).await {
        Ok(Some(saved)) => {
            let state = match serde_json::from_slice::<Value>(&saved.state) {
                Ok(value) => value,
                Err(_) => match String::from_utf8(saved.state) {
                    Ok(text) => Value::String(text),
                    Err(e) => {
                        Value::String(format!("{} bytes (not JSON or text)", e.into_bytes().len()))
                    }
                },
            };
            (state, Some(saved.saved_ms), String::new())
        }
        Ok(None) if !admin.rooms.kept() => (
            Value::Null,
            None,
            "rooms are not saved to storage on this node (rooms.persist is off)".into(),
        ),
        Ok(None) => (Value::Null, None, "not saved yet".into()),
        Err(e) => (Value::Null, None, format!("reading storage: {e}")),
    };
    json!({
        "id": info.id, "game": info.game, "version": info.version, "players": info.members,
        "tick_hz": info.tick_hz, "restarts": info.restarts, "last_error": info.last_error,
        "state": state, "saved_ms": saved_ms, "state_note": note,
        "messages": handle.messages(),
    })
}
