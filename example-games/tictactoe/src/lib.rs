//! Tic-tac-toe: a turn-based game for two, to show the contract is not arena-shaped.
//!
//! The first player to join plays X and moves first, the second plays O; a third is
//! refused. A move is `{"cell": 4}` (cells 0..=8, row by row). After every accepted move
//! (and when the second player arrives) every member gets the whole game:
//! `{"board": "X...O....", "x": 1, "o": 2, "next": 1, "winner": null, "draw": false}`.
//! An illegal move gets `{"error": "..."}` back to its sender only. If a player leaves an
//! unfinished game, the other wins.
//!
//! Finished games are kept (contract 0.3.0 storage): each player's record
//! `{"wins": 1, "losses": 0, "draws": 0}` is the object `tictactoe.stats/record` they
//! own (anyone may read it), and wins count on the leaderboard `tictactoe.wins`. When a
//! player's record is written, they get `{"stats": {...}}`.

use ludus_sdk::storage::{
    Answer, Condition, Leaderboard, ReadAccess, RequestId, ScoreOperator, SortOrder, StorageError,
    Write,
};
use ludus_sdk::{Game, LeaveReason, LogLevel, Player, PlayerId, Reject, Room, export_game};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a player's record is kept, and the leaderboard of wins.
const STATS: &str = "tictactoe.stats";
const RECORD: &str = "record";
const WINS: &str = "tictactoe.wins";

/// A player's record over every game.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Stats {
    wins: u64,
    losses: u64,
    draws: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Outcome {
    Win,
    Loss,
    Draw,
}

impl Stats {
    fn with(mut self, outcome: Outcome) -> Stats {
        match outcome {
            Outcome::Win => self.wins += 1,
            Outcome::Loss => self.losses += 1,
            Outcome::Draw => self.draws += 1,
        }
        self
    }
}

/// A record being updated: read it, then write it at the version read.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Update {
    player: PlayerId,
    outcome: Outcome,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Mark {
    X,
    O,
}

#[derive(Default, Serialize, Deserialize)]
struct TicTacToe {
    board: [Option<Mark>; 9],
    x: Option<PlayerId>,
    o: Option<PlayerId>,
    next: Option<PlayerId>,
    winner: Option<PlayerId>,
    draw: bool,
    /// Storage requests awaiting their answer (kept across a live swap), by request id.
    #[serde(default)]
    reading: BTreeMap<u64, Update>,
    #[serde(default)]
    writing: BTreeMap<u64, Update>,
}

#[derive(Deserialize)]
struct Move {
    cell: usize,
}

#[derive(Serialize)]
struct View {
    board: String,
    x: Option<PlayerId>,
    o: Option<PlayerId>,
    next: Option<PlayerId>,
    winner: Option<PlayerId>,
    draw: bool,
}

const LINES: [[usize; 3]; 8] = [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8],
    [0, 3, 6],
    [1, 4, 7],
    [2, 5, 8],
    [0, 4, 8],
    [2, 4, 6],
];

impl TicTacToe {
    fn finished(&self) -> bool {
        self.winner.is_some() || self.draw
    }

    fn mark_of(&self, player: PlayerId) -> Option<Mark> {
        if self.x == Some(player) {
            Some(Mark::X)
        } else if self.o == Some(player) {
            Some(Mark::O)
        } else {
            None
        }
    }

    /// Applies a move or says why it is illegal.
    fn play(&mut self, player: PlayerId, cell: usize) -> Result<(), &'static str> {
        let mark = self
            .mark_of(player)
            .ok_or("you are not playing in this room")?;
        if self.finished() {
            return Err("the game is over");
        }
        if self.o.is_none() {
            return Err("waiting for a second player");
        }
        if self.next != Some(player) {
            return Err("not your turn");
        }
        let slot = self.board.get_mut(cell).ok_or("cell must be 0..=8")?;
        if slot.is_some() {
            return Err("cell is taken");
        }
        *slot = Some(mark);
        if LINES
            .iter()
            .any(|line| line.iter().all(|&c| self.board[c] == Some(mark)))
        {
            self.winner = Some(player);
            self.next = None;
        } else if self.board.iter().all(Option::is_some) {
            self.draw = true;
            self.next = None;
        } else {
            self.next = if mark == Mark::X { self.o } else { self.x };
        }
        Ok(())
    }

    /// Keeps a finished game: each player's record, and the winner's win.
    fn record_result(&mut self, room: &mut Room) {
        let (Some(x), Some(o)) = (self.x, self.o) else {
            return;
        };
        for player in [x, o] {
            let outcome = match self.winner {
                None => Outcome::Draw,
                Some(w) if w == player => Outcome::Win,
                Some(_) => Outcome::Loss,
            };
            self.read_record(room, Update { player, outcome });
        }
        if let Some(winner) = self.winner {
            room.submit_score(WINS, winner, 1, 0, None);
        }
    }

    fn read_record(&mut self, room: &mut Room, update: Update) {
        let id = room.read_object(STATS, RECORD, Some(update.player));
        self.reading.insert(id.0, update);
    }

    fn view(&self) -> View {
        let board = self
            .board
            .iter()
            .map(|c| match c {
                Some(Mark::X) => 'X',
                Some(Mark::O) => 'O',
                None => '.',
            })
            .collect();
        View {
            board,
            x: self.x,
            o: self.o,
            next: self.next,
            winner: self.winner,
            draw: self.draw,
        }
    }
}

impl Game for TicTacToe {
    fn init(room: &mut Room) -> Result<Self, String> {
        // Nothing happens between moves: one tick a second is plenty.
        room.set_tick_rate(1);
        room.set_label("waiting");
        room.define_leaderboard(&Leaderboard {
            id: WINS.into(),
            order: SortOrder::Descending,
            operator: ScoreOperator::Increment,
            reset_every_seconds: None,
        });
        Ok(TicTacToe::default())
    }

    fn join(&mut self, room: &mut Room, player: &Player) -> Result<(), Reject> {
        if self.x.is_none() {
            self.x = Some(player.id);
            self.next = Some(player.id);
        } else if self.o.is_none() {
            self.o = Some(player.id);
            room.set_label("playing");
            room.broadcast_json(&self.view());
        } else {
            return Err("the game already has two players".into());
        }
        Ok(())
    }

    fn leave(&mut self, room: &mut Room, player: PlayerId, _reason: LeaveReason) {
        let Some(mark) = self.mark_of(player) else {
            return;
        };
        if !self.finished() && self.o.is_some() {
            self.winner = if mark == Mark::X { self.o } else { self.x };
            self.next = None;
            room.set_label("finished");
            room.broadcast_json(&self.view());
            self.record_result(room);
        } else if self.o.is_none() {
            // Nobody else is here yet: free the seat.
            *self = TicTacToe::default();
        }
    }

    fn message(&mut self, room: &mut Room, from: PlayerId, msg: &[u8]) {
        let result = match serde_json::from_slice::<Move>(msg) {
            Ok(m) => self.play(from, m.cell),
            Err(_) => Err("a move is {\"cell\": 0..=8}"),
        };
        match result {
            Ok(()) => {
                room.broadcast_json(&self.view());
                if self.finished() {
                    room.set_label("finished");
                    self.record_result(room);
                }
            }
            Err(e) => room.send_json(from, &serde_json::json!({ "error": e })),
        }
    }

    fn storage(&mut self, room: &mut Room, id: RequestId, answer: Result<Answer, StorageError>) {
        if let Some(update) = self.reading.remove(&id.0) {
            // The record as it is now (none yet: a first game), then the write at
            // that version: two rooms finishing at once cannot lose a result.
            let (stats, condition) = match answer {
                Ok(Answer::Object(o)) => match o.value_json::<Stats>() {
                    Ok(stats) => (stats, Condition::Version(o.version)),
                    Err(e) => return room.log(LogLevel::Error, &e),
                },
                Err(StorageError::NotFound) => (Stats::default(), Condition::Absent),
                other => {
                    return room.log(
                        LogLevel::Warn,
                        &format!("reading {}'s record: {other:?}", update.player),
                    );
                }
            };
            let write = Write::json(STATS, RECORD, &stats.with(update.outcome)).map(|w| {
                w.owner(update.player)
                    .readable_by(ReadAccess::Public)
                    .only_if(condition)
            });
            match write {
                Ok(write) => {
                    let id = room.write_object(write);
                    self.writing.insert(id.0, update);
                }
                Err(e) => room.log(LogLevel::Error, &e),
            }
        } else if let Some(update) = self.writing.remove(&id.0) {
            match answer {
                Ok(Answer::Written(o)) => {
                    let stats: serde_json::Value =
                        serde_json::from_str(&o.value).unwrap_or_default();
                    room.send_json(update.player, &serde_json::json!({ "stats": stats }));
                }
                // Written meanwhile by another room: read again and retry.
                Err(StorageError::Conflict(_)) => self.read_record(room, update),
                other => room.log(
                    LogLevel::Warn,
                    &format!("writing {}'s record: {other:?}", update.player),
                ),
            }
        } else if let Err(e) = answer {
            room.log(LogLevel::Warn, &format!("storage request {}: {e:?}", id.0));
        }
    }
}

export_game!(TicTacToe);
