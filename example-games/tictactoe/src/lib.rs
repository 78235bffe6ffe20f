//! Tic-tac-toe: a turn-based game for two, to show the contract is not arena-shaped.
//!
//! The first player to join plays X and moves first, the second plays O; a third is
//! refused. A move is `{"cell": 4}` (cells 0..=8, row by row). After every accepted move
//! (and when the second player arrives) every member gets the whole game:
//! `{"board": "X...O....", "x": 1, "o": 2, "next": 1, "winner": null, "draw": false}`.
//! An illegal move gets `{"error": "..."}` back to its sender only. If a player leaves an
//! unfinished game, the other wins.

use ludus_sdk::{Game, LeaveReason, Player, PlayerId, Reject, Room, export_game};
use serde::{Deserialize, Serialize};

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
                if self.finished() {
                    room.set_label("finished");
                }
                room.broadcast_json(&self.view());
            }
            Err(e) => room.send_json(from, &serde_json::json!({ "error": e })),
        }
    }
}

export_game!(TicTacToe);
