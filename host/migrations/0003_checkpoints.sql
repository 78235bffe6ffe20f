-- Rooms and sessions that outlive their node. A room's last checkpoint: the game's
-- saved state (hex text, like module bytes) and the host's own record of the room
-- (JSON: members, tick rate, random stream position, label, ...), under the node that
-- runs it. A session: who it belongs to and the SHA-256 of its resume token (the token
-- itself is never kept), so a player can resume after the node restarts.
CREATE TABLE ludus_room_checkpoints (
    room_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    game TEXT NOT NULL,
    version TEXT NOT NULL,
    module_sha256 TEXT NOT NULL,
    record TEXT NOT NULL,
    state_hex TEXT NOT NULL,
    size BIGINT NOT NULL,
    saved_ms BIGINT NOT NULL
);
CREATE INDEX ludus_room_checkpoints_node ON ludus_room_checkpoints (node);

CREATE TABLE ludus_sessions (
    player_id BIGINT PRIMARY KEY,
    node TEXT NOT NULL,
    session_id TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    saved_ms BIGINT NOT NULL
);
CREATE INDEX ludus_sessions_node ON ludus_sessions (node);
