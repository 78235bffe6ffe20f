-- Ludus storage, version 1. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are milliseconds since the Unix epoch; JSON values are text.

-- A guest's device secret (its SHA-256) and the player id it keeps.
CREATE TABLE ludus_accounts (
    device_hash TEXT PRIMARY KEY,
    player_id BIGINT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Objects: (collection, key, owner) -> a JSON value. Owner 0 is the game itself.
-- read_perm: 0 none (the game only), 1 the owner, 2 public; write_perm: 0 none, 1 the owner.
CREATE TABLE ludus_objects (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    owner BIGINT NOT NULL,
    value TEXT NOT NULL,
    version BIGINT NOT NULL,
    read_perm BIGINT NOT NULL,
    write_perm BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (collection, owner, key)
);
CREATE INDEX ludus_objects_by_key ON ludus_objects (collection, key, owner);

-- Leaderboards. sort_order: 0 descending, 1 ascending; operator: 0 best, 1 set, 2 increment.
-- reset_secs: 0 never, else records count only within the current period of that length.
CREATE TABLE ludus_leaderboards (
    id TEXT PRIMARY KEY,
    sort_order BIGINT NOT NULL,
    operator BIGINT NOT NULL,
    reset_secs BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE ludus_leaderboard_records (
    leaderboard TEXT NOT NULL,
    owner BIGINT NOT NULL,
    username TEXT NOT NULL,
    score BIGINT NOT NULL,
    subscore BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    submissions BIGINT NOT NULL,
    period_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (leaderboard, owner)
);
CREATE INDEX ludus_leaderboard_rank ON ludus_leaderboard_records (leaderboard, period_ms, score, subscore, owner);
