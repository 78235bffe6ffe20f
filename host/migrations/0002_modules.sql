-- Deployed modules and each game's version history, so a node (or a whole cluster)
-- started from nothing comes back with the games it ran. Bytes are hex text: the same
-- column type on SQLite and PostgreSQL.
CREATE TABLE ludus_modules (
    sha256 TEXT PRIMARY KEY,
    game TEXT NOT NULL,
    version TEXT NOT NULL,
    size BIGINT NOT NULL,
    bytes_hex TEXT NOT NULL,
    stored_ms BIGINT NOT NULL
);

CREATE TABLE ludus_game_history (
    game TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    deployed_ms BIGINT NOT NULL,
    PRIMARY KEY (game, seq)
);
