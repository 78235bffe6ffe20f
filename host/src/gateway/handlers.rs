//! What a session does with each client request: play (message), join (here or on
//! another node), create, leave, find and cancel a match. Each handler answers with the
//! frame to send, or a [`ClientError`] that becomes an error frame answering the
//! request's `seq`.

use super::client_error::ClientError;
use super::pb::{
    self, ClientFrame, ErrorCode, client_frame::Body as In, server_frame::Body as Out,
};
use super::session::{Joined, Session};
use crate::matchmaking::{MatchEvent, check_request};
use crate::rooms::{CreateError, CreateRoom, LeaveReason, RoomHandle, check_room_id};
use futures_util::future::BoxFuture;

type Answer = Result<Out, ClientError>;

impl Session {
    /// Handles a client frame. Most (messages, pings, leaves, matchmaking) are handled
    /// here and now. Joining and creating await etcd and other nodes: their futures are
    /// large and rare, so they come back boxed, to be awaited on the heap, instead of
    /// sitting inline in every session's task (each idle session would be that much
    /// larger; `ludus bench idle`). The session loop's future holds only the box.
    pub(super) fn client_frame(&mut self, frame: ClientFrame) -> Option<BoxFuture<'_, ()>> {
        self.replay.acknowledged(frame.ack);
        if !self.replay.accept(frame.seq) {
            return None; // already processed: a resend after a resume
        }
        let seq = frame.seq;
        let answer = match frame.body {
            None => return None,
            Some(In::Ping(ping)) => {
                self.send_unnumbered(Out::Pong(pb::Pong { nonce: ping.nonce }));
                return None;
            }
            Some(In::Message(msg)) => match self.joined.get_mut(&msg.room_id) {
                Some(room) => {
                    room.message(self.who.player_id, msg.payload);
                    return None;
                }
                None => Err(not_in_room(&msg.room_id)),
            },
            Some(In::Join(join)) => {
                return Some(Box::pin(async move {
                    let answer = self.join_any(&join.room_id).await;
                    self.answer(seq, answer);
                }));
            }
            Some(In::Create(create)) => {
                return Some(Box::pin(async move {
                    let answer = self.create(create).await;
                    self.answer(seq, answer);
                }));
            }
            Some(In::FindMatch(find)) => self.find_match(find),
            Some(In::CancelMatch(_)) => self.cancel_match(),
            Some(In::Leave(leave)) => self.leave(leave.room_id),
            // `Conn::next` ends the session on a goodbye before it gets here.
            Some(In::Goodbye(_)) => return None,
        };
        self.answer(seq, answer);
        None
    }

    /// Sends a request's answer, or the error frame answering its `seq`.
    fn answer(&mut self, seq: u64, answer: Answer) {
        let body = answer.unwrap_or_else(|e| e.frame(seq));
        self.send(body);
    }

    /// Joins a room of this node, or of another node through the link to it.
    async fn join_any(&mut self, id: &str) -> Answer {
        if let Some(room) = self.services.rooms.get(id) {
            return self.join(room).await;
        }
        match self.join_remote(id).await {
            Some(answer) => answer,
            None => Err(ClientError::new(
                ErrorCode::RoomNotFound,
                format!("no room `{id}`"),
            )),
        }
    }

    async fn join(&mut self, room: RoomHandle) -> Answer {
        let id = room.id().to_owned();
        if self.joined.contains_key(&id) {
            return Err(already_in(&id));
        }
        room.join(self.who.player_id, &self.who.name, self.sink.clone())
            .await?;
        let info = room.info();
        self.joined.insert(id.clone(), Joined::Local(room));
        Ok(Out::Joined(pb::Joined {
            room_id: id,
            game: info.game,
            version: info.version,
        }))
    }

    /// Joins a room another node of the cluster owns, through the link to that node;
    /// `None` if no node has a room of that id.
    async fn join_remote(&mut self, id: &str) -> Option<Answer> {
        let peers = self.services.peers.clone()?;
        let cluster = &self.services.cluster;
        let owner = match cluster.find_room_owner(id).await {
            Ok(owner) => owner?,
            Err(e) => return Some(Err(e.into())),
        };
        if owner == cluster.node_id() {
            return None; // ours, but not open (yet, or any more)
        }
        if self.joined.contains_key(id) {
            return Some(Err(already_in(id)));
        }
        let (player, name) = (self.who.player_id, self.who.name.clone());
        let joined = peers
            .join(&owner, player, &name, id, self.sink.clone())
            .await;
        Some(match joined {
            Ok((remote, joined)) => {
                self.joined.insert(id.to_owned(), Joined::Remote(remote));
                Ok(Out::Joined(pb::Joined {
                    room_id: id.to_owned(),
                    game: joined.game,
                    version: joined.version,
                }))
            }
            Err(e) => Err(e.into()),
        })
    }

    /// Creates a room (claimed in the cluster first, so its id is unique cluster-wide)
    /// and joins it.
    async fn create(&mut self, create: pb::CreateRoom) -> Answer {
        let (rooms, cluster) = (&self.services.rooms, &self.services.cluster);
        if !rooms.has_game(&create.game) {
            return Err(CreateError::UnknownGame(create.game).into());
        }
        let id = match create.room_id {
            id if id.is_empty() => crate::csprng::hex::<8>(),
            id => id,
        };
        check_room_id(&id)?;
        // An id in use here is refused before anything is claimed, so the room's own
        // claim is never touched.
        if rooms.get(&id).is_some() {
            return Err(CreateError::DuplicateId(id).into());
        }
        cluster.claim_room(&id, &create.game).await?;
        let req = CreateRoom {
            game: create.game,
            id: Some(id.clone()),
            config: Some(create.config).filter(|c| !c.is_empty()),
            seed: None,
            creator: Some(self.who.player_id),
            held: None,
        };
        match rooms.create(req).await {
            Ok(room) => self.join(room).await,
            // Made here meanwhile by someone else, who holds the claim too.
            Err(e @ CreateError::DuplicateId(_)) => Err(e.into()),
            Err(e) => {
                cluster.release_room(&id).await;
                Err(e.into())
            }
        }
    }

    fn leave(&mut self, room_id: String) -> Answer {
        let room = self
            .joined
            .remove(&room_id)
            .ok_or_else(|| not_in_room(&room_id))?;
        room.leave(self.who.player_id, LeaveReason::Left);
        Ok(Out::Left(pb::Left { room_id }))
    }

    fn find_match(&mut self, find: pb::FindMatch) -> Answer {
        if let Some(ticket) = &self.ticket {
            let e = format!("already looking for a match (ticket {ticket}); cancel it first");
            return Err(ClientError::new(ErrorCode::Refused, e));
        }
        if !self.services.rooms.has_game(&find.game) {
            return Err(CreateError::UnknownGame(find.game).into());
        }
        check_request(&find.mode, &find.properties)?;
        let ticket = self.services.matchmaker.submit(
            self.who.player_id,
            &find.game,
            &find.mode,
            find.properties,
            self.match_sink.clone(),
        );
        self.ticket = Some(ticket.clone());
        Ok(Out::MatchQueued(pb::MatchQueued {
            ticket_id: ticket,
            game: find.game,
            mode: find.mode,
        }))
    }

    fn cancel_match(&mut self) -> Answer {
        let ticket = self
            .ticket
            .take()
            .ok_or_else(|| ClientError::new(ErrorCode::NoTicket, "no match ticket to cancel"))?;
        self.services.matchmaker.cancel(&ticket);
        Ok(Out::MatchCancelled(pb::MatchCancelled {
            ticket_id: ticket,
            reason: "cancelled by the player".into(),
        }))
    }

    /// The matchmaker's news of the player's ticket (ignored if it was cancelled).
    pub(super) fn match_event(&mut self, event: MatchEvent) {
        let (ticket, body) = match event {
            MatchEvent::Found {
                ticket,
                room,
                game,
                mode,
                players,
            } => {
                let found = pb::MatchFound {
                    ticket_id: ticket.clone(),
                    room_id: room,
                    game,
                    mode,
                    players,
                };
                (ticket, Out::MatchFound(found))
            }
            MatchEvent::Dropped { ticket, reason } => {
                let cancelled = pb::MatchCancelled {
                    ticket_id: ticket.clone(),
                    reason,
                };
                (ticket, Out::MatchCancelled(cancelled))
            }
        };
        if self.ticket.as_deref() != Some(ticket.as_str()) {
            return; // cancelled meanwhile
        }
        self.ticket = None;
        self.send(body);
    }
}

fn not_in_room(room: &str) -> ClientError {
    ClientError::new(ErrorCode::NotInRoom, format!("not in room `{room}`"))
}

fn already_in(room: &str) -> ClientError {
    ClientError::new(ErrorCode::Refused, format!("already in room `{room}`"))
}
