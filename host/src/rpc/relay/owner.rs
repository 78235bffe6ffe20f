//! The owner's end of a link: joins forwarded players to local rooms, and one pump per
//! link relays their rooms' output back.

use futures_util::{FutureExt, Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{LINK_QUEUE, frame};
use crate::rooms::{JoinError, LeaveReason, PlayerEvents, RoomEvent, RoomHandle, Rooms};
use crate::rpc::layers;
use crate::rpc::pb::peer_frame::Body;
use crate::rpc::pb::relay_server::{Relay, RelayServer};
use crate::rpc::pb::room_output::Kind;
use crate::rpc::pb::{JoinResult, JoinRoom, PeerFrame, RoomMoved, RoomOutput};

/// Room events queued per forwarded membership on the owner.
const PLAYER_QUEUE: usize = 1024;
/// Room events a link's pump takes at once before sending.
const PUMP_BATCH: usize = 1024;

/// The owner's end: joins forwarded players to local rooms and relays their output.
pub struct RelayService {
    rooms: Rooms,
    /// How long a room holds the places of a gateway node's players when its link ends.
    hold: std::time::Duration,
    /// Ends every link when the node shuts down.
    stop: tokio_util::sync::CancellationToken,
}

impl RelayService {
    pub fn server(
        rooms: Rooms,
        secret: &str,
        hold: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> layers::Checked<RelayServer<Self>> {
        let limit = super::frame_limit(rooms.runtime().limits().max_message_bytes);
        let server = RelayServer::new(RelayService { rooms, hold, stop })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        layers::checked(server, secret)
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<PeerFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Relay for RelayService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        req: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let mut inbound = req.into_inner();
        let (out, out_rx) = mpsc::channel::<PeerFrame>(LINK_QUEUE);
        let (rooms, stop, hold) = (self.rooms.clone(), self.stop.clone(), self.hold);
        let (add, added) = mpsc::unbounded_channel();
        tokio::spawn(pump(added, out.clone()));
        tokio::spawn(async move {
            let mut members: HashMap<(u64, String), RoomHandle> = HashMap::new();
            let gateway_gone = loop {
                let f = tokio::select! {
                    _ = stop.cancelled() => break false,
                    f = inbound.message() => match f {
                        Ok(Some(f)) => f,
                        _ => break true,
                    },
                };
                match f.body {
                    Some(Body::Join(j)) => {
                        let result = join_here(&rooms, &j, &add).await;
                        let reply = match result {
                            Ok(room) => {
                                let info = room.info();
                                members.insert((j.player, j.room.clone()), room);
                                JoinResult {
                                    player: j.player,
                                    room: j.room,
                                    error: String::new(),
                                    game: info.game,
                                    version: info.version,
                                    not_held: false,
                                }
                            }
                            Err((error, not_held)) => JoinResult {
                                player: j.player,
                                room: j.room,
                                error,
                                not_held,
                                ..JoinResult::default()
                            },
                        };
                        if out.send(frame(Body::Joined(reply))).await.is_err() {
                            break true;
                        }
                    }
                    Some(Body::Input(i)) => {
                        if let Some(room) = members.get(&(i.player, i.room)) {
                            room.message(i.player, i.payload);
                        }
                    }
                    Some(Body::Leave(l)) => {
                        if let Some(room) = members.remove(&(l.player, l.room)) {
                            room.leave(l.player, LeaveReason::Left);
                        }
                    }
                    _ => {}
                }
            };
            // The gateway node is gone (or the link broke): its players' places are held
            // for the node to attach them again, or for another node that takes their
            // sessions over; not attached in time, they leave as disconnected.
            for ((player, _), room) in members {
                match gateway_gone && !hold.is_zero() {
                    true => room.hold(player, hold),
                    false => room.leave(player, LeaveReason::Disconnected),
                }
            }
        });
        let stream = ReceiverStream::new(out_rx)
            .map(Ok)
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A forwarded member's room output, as the link's pump receives it.
type Member = ((u64, String), PlayerEvents);

/// Joins (or attaches, see [`JoinRoom::attach`]) a forwarded player to a local room;
/// its output goes to the link's pump. An error says why, and whether it is for good
/// (an attach of a player the room does not hold).
async fn join_here(
    rooms: &Rooms,
    j: &JoinRoom,
    pump: &mpsc::UnboundedSender<Member>,
) -> Result<RoomHandle, (String, bool)> {
    let room = rooms
        .get(&j.room)
        .ok_or_else(|| (format!("no room `{}` on this node", j.room), false))?;
    let (sink, events) = crate::mailbox::channel::<RoomEvent>(PLAYER_QUEUE);
    let joined = match j.attach {
        true => room.attach(j.player, sink).await,
        false => room.join(j.player, &j.name, sink).await,
    };
    joined.map_err(|e| {
        let not_held = matches!(e, JoinError::NotHeld(_));
        (e.to_string(), not_held)
    })?;
    let _ = pump.send(((j.player, j.room.clone()), events));
    Ok(room)
}

/// Relays the output of every member of one link: what is ready is taken together,
/// and output shared by several members (the same bytes, from the same room) is sent
/// once with every recipient. Each member's output keeps its order.
async fn pump(mut added: mpsc::UnboundedReceiver<Member>, out: mpsc::Sender<PeerFrame>) {
    let mut members: StreamMap<(u64, String), PlayerEvents> = StreamMap::new();
    loop {
        let first = tokio::select! {
            member = added.recv() => match member {
                Some((key, events)) => {
                    members.insert(key, events);
                    continue;
                }
                None if members.is_empty() => return,
                None => members.next().await,
            },
            Some(first) = members.next(), if !members.is_empty() => Some(first),
        };
        let Some(first) = first else { continue };
        let mut ready = vec![first];
        while ready.len() < PUMP_BATCH
            && let Some(Some(next)) = members.next().now_or_never()
        {
            ready.push(next);
        }
        for output in coalesce(ready) {
            if out.send(frame(Body::Output(output))).await.is_err() {
                return; // the link is gone
            }
        }
    }
}

/// Room events of several members as link frames: one per distinct output, with every
/// member that got it, in the order each first appeared. A member's kick or close ends
/// its stream (the room no longer sends to it).
fn coalesce(ready: Vec<((u64, String), RoomEvent)>) -> Vec<RoomOutput> {
    let mut outputs: Vec<RoomOutput> = Vec::new();
    for ((player, room), event) in ready {
        let kind = match event {
            RoomEvent::Message { bytes, .. } => Kind::Message(bytes),
            RoomEvent::Kicked { reason, .. } => Kind::Kicked(reason),
            RoomEvent::Closed { reason, .. } => Kind::Closed(reason),
            RoomEvent::Moved { node, reason, .. } => Kind::Moved(RoomMoved {
                node: node.unwrap_or_default(),
                reason,
            }),
        };
        let same = |o: &&mut RoomOutput| {
            o.room == room
                && match (&o.kind, &kind) {
                    // The room broadcasts one buffer to every member: compare it cheaply.
                    (Some(Kind::Message(a)), Kind::Message(b)) => {
                        a.as_ptr() == b.as_ptr() && a.len() == b.len()
                    }
                    (Some(Kind::Closed(a)), Kind::Closed(b)) => a == b,
                    (Some(Kind::Moved(a)), Kind::Moved(b)) => a == b,
                    _ => false,
                }
        };
        match outputs.iter_mut().find(|o| same(o)) {
            Some(o) => o.more_players.push(player),
            None => outputs.push(RoomOutput {
                player,
                room,
                kind: Some(kind),
                more_players: Vec::new(),
            }),
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(room: &str, bytes: &Bytes) -> RoomEvent {
        RoomEvent::Message {
            room: room.into(),
            bytes: bytes.clone(),
        }
    }

    #[test]
    fn a_broadcast_crosses_the_link_once_with_every_recipient() {
        let snapshot = Bytes::from_static(b"{\"tick\":1}");
        // Equal bytes in another buffer: a send to one player, not the broadcast.
        let own = Bytes::from(b"{\"tick\":1}".to_vec());
        let next = Bytes::from_static(b"{\"tick\":2}");
        let key = |p: u64, r: &str| (p, r.to_owned());
        let ready = vec![
            (key(1, "r"), message("r", &snapshot)),
            (key(1, "r"), message("r", &next)),
            (key(2, "r"), message("r", &snapshot)),
            (key(3, "r"), message("r", &own)),
            (key(2, "r"), message("r", &next)),
            (key(4, "other"), message("other", &snapshot)),
        ];
        let outputs = coalesce(ready);
        let seen: Vec<(u64, Vec<u64>, &str)> = outputs
            .iter()
            .map(|o| (o.player, o.more_players.clone(), o.room.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, vec![2], "r"),
                (1, vec![2], "r"),
                (3, vec![], "r"),
                (4, vec![], "other"),
            ]
        );
        // Each player's messages keep their order: tick 1, then tick 2.
        assert_eq!(outputs[0].kind, Some(Kind::Message(snapshot)));
        assert_eq!(outputs[1].kind, Some(Kind::Message(next)));
    }
}
