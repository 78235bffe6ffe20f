/**
 * Ludus games in TypeScript.
 *
 * A game is a set of functions over a state you choose (any JSON value by default).
 * Export it as the module's default:
 *
 * ```ts
 * import { defineGame } from "@ludus/game";
 *
 * export default defineGame<{ count: number }>({
 *   name: "counter",
 *   version: "1.0.0",
 *   init: () => ({ count: 0 }),
 *   message(state, room, from, msg) {
 *     state.count += 1;
 *     room.broadcastJson({ count: state.count, from });
 *   },
 * });
 * ```
 *
 * `ludus dev <dir>` builds and serves it; `npx ludus-build-ts <dir>` builds the
 * component (`<dir>/dist/<name>.wasm`). It mirrors the Rust SDK (`ludus-sdk`): the same
 * calls, the same defaults (a room accepts every player, state saved and restored as
 * JSON). A newer version whose state has new fields gives them their defaults in its
 * own `restore`.
 */

import * as host from "ludus:game/host@0.3.0";
import * as hostStorage from "ludus:game/storage@0.3.0";

/** A player's id, unique in the cluster. Ids are below 2^53: a JS number holds them. */
export type PlayerId = number;

/** A player as a room sees it on join. */
export interface Player {
  id: PlayerId;
  /** The display name chosen at login; may be empty. */
  name: string;
}

/** Why a player left. */
export type LeaveReason = "left" | "disconnected" | "kicked" | "removed";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

/** Thrown from `init`, `join` or `restore`: the room or the player is refused with it. */
export class Reject extends Error {}

/** The id of a storage request, given back with its answer. */
export type RequestId = number;

export type ReadAccess = hostStorage.ReadAccess;
export type WriteAccess = hostStorage.WriteAccess;
/** When a write or delete goes ahead: always, only if absent, or only at a version. */
export type Condition = "any" | "absent" | { version: number };

/** A stored object: a JSON value by collection, key and owner. */
export interface StoredObject {
  collection: string;
  key: string;
  /** The owning player; undefined for the game's own objects. */
  owner?: PlayerId;
  /** JSON text; `JSON.parse` it, or use `valueJson`. */
  value: string;
  /** 1 on the first write, one more on each. */
  version: number;
  read: ReadAccess;
  write: WriteAccess;
  updatedMs: number;
}

export interface Score {
  rank: number;
  player: PlayerId;
  name: string;
  score: number;
  subscore: number;
  /** JSON text. */
  metadata: string;
  submissions: number;
  updatedMs: number;
}

/** The answer to a storage request. */
export type Answer =
  | { kind: "object"; object: StoredObject }
  | { kind: "written"; object: StoredObject }
  | { kind: "deleted" }
  | { kind: "objects"; objects: StoredObject[]; cursor?: string }
  | { kind: "defined" }
  | { kind: "scored"; score: Score }
  | { kind: "scores"; scores: Score[]; cursor?: string };

/** Why a storage request failed. */
export interface StorageError {
  kind: "not-found" | "conflict" | "too-large" | "invalid" | "unavailable";
  /** What went wrong, for the kinds that say. */
  detail?: string;
}

/** A write: `value` is any JSON value (stored as its JSON text). */
export interface Write {
  collection: string;
  key: string;
  owner?: PlayerId;
  value: unknown;
  /** Default: "any" (the last writer wins). */
  condition?: Condition;
  /** Who may read it over the players' HTTP API. Default: "owner". */
  read?: ReadAccess;
  /** Who may write it over the players' HTTP API. Default: "none". */
  write?: WriteAccess;
}

export interface Leaderboard {
  id: string;
  order?: "descending" | "ascending";
  operator?: "best" | "set" | "increment";
  /** Records count within periods of this many seconds (86400: daily); never reset when absent. */
  resetEverySeconds?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A message's bytes as text (UTF-8). */
export function text(msg: Uint8Array): string {
  return decoder.decode(msg);
}

/** A message's bytes parsed as JSON; throws a `SyntaxError` that says why if it is not. */
export function parseJson<T = unknown>(msg: Uint8Array): T {
  return JSON.parse(decoder.decode(msg)) as T;
}

/** What a room's game can do: send, close, set the tick rate, log, use storage. */
export class Room {
  /** The room's id, unique in the cluster. */
  readonly id: string;
  /** The room config given by whoever created the room (JSON text, `{}` when empty). */
  readonly config: string;
  /** Seed of the room's random stream. */
  readonly seed: bigint;

  constructor(id: string, config: string, seed: bigint) {
    this.id = id;
    this.config = config;
    this.seed = seed;
  }

  /** The room config parsed as JSON (an object: the host checks it is one). */
  configJson<T = Record<string, unknown>>(): T {
    return JSON.parse(this.config) as T;
  }

  send(to: PlayerId, msg: Uint8Array | string): void {
    host.send(BigInt(to), bytes(msg));
  }

  sendJson(to: PlayerId, value: unknown): void {
    this.send(to, JSON.stringify(value));
  }

  broadcast(msg: Uint8Array | string): void {
    host.broadcast(bytes(msg));
  }

  broadcastJson(value: unknown): void {
    this.broadcast(JSON.stringify(value));
  }

  broadcastExcept(except: PlayerId, msg: Uint8Array | string): void {
    host.broadcastExcept(BigInt(except), bytes(msg));
  }

  broadcastExceptJson(except: PlayerId, value: unknown): void {
    this.broadcastExcept(except, JSON.stringify(value));
  }

  /** Removes a player; the game then gets `leave(player, "kicked")`. */
  kick(player: PlayerId, reason: string): void {
    host.kick(BigInt(player), reason);
  }

  /** Closes the room: every member is told `reason`, no further calls are made. */
  close(reason: string): void {
    host.close(reason);
  }

  /** Ticks per second (1..=120; other values are clamped). */
  setTickRate(hz: number): void {
    host.setTickRate(hz);
  }

  /** Hold members' messages until just before the next tick, all in one call. */
  holdMessagesUntilTick(hold: boolean): void {
    host.holdMessages(hold);
  }

  /** Keep the room open while it has no members. */
  keepOpen(keep: boolean): void {
    host.keepOpen(keep);
  }

  /** Leave the room out of room listings. */
  setPrivate(hidden: boolean): void {
    host.setPrivate(hidden);
  }

  setLabel(label: string): void {
    host.setLabel(label);
  }

  /** Wall-clock time in milliseconds since the Unix epoch (with microseconds). */
  now(): number {
    return Number(host.nowMicros()) / 1000;
  }

  /** The next number of the room's seeded random stream (a u64). */
  random(): bigint {
    return host.random();
  }

  /** A number in `[0, n)` from the room's random stream. */
  randomBelow(n: number): number {
    return Number(host.random() % BigInt(Math.max(1, Math.floor(n))));
  }

  /** Writes to the host's log, tagged with the room id. */
  log(level: LogLevel, msg: string): void {
    host.log(level, msg);
  }

  /** Storage requests: each is queued and answered in `Game.storage` by its id. */
  readObject(collection: string, key: string, owner?: PlayerId): RequestId {
    return Number(hostStorage.read(objectKey(collection, key, owner)));
  }

  writeObject(w: Write): RequestId {
    return Number(
      hostStorage.write({
        at: objectKey(w.collection, w.key, w.owner),
        value: JSON.stringify(w.value),
        condition: condition(w.condition ?? "any"),
        read: w.read ?? "owner",
        write: w.write ?? "none",
      }),
    );
  }

  deleteObject(collection: string, key: string, owner?: PlayerId, when: Condition = "any"): RequestId {
    return Number(hostStorage.delete(objectKey(collection, key, owner), condition(when)));
  }

  listObjects(collection: string, owner: PlayerId | undefined, limit: number, cursor?: string): RequestId {
    return Number(
      hostStorage.list(collection, owner === undefined ? undefined : BigInt(owner), limit, cursor),
    );
  }

  defineLeaderboard(board: Leaderboard): RequestId {
    return Number(
      hostStorage.defineLeaderboard({
        id: board.id,
        order: board.order ?? "descending",
        operator: board.operator ?? "best",
        resetEverySeconds:
          board.resetEverySeconds === undefined ? undefined : BigInt(board.resetEverySeconds),
      }),
    );
  }

  submitScore(board: string, player: PlayerId, score: number, subscore = 0, metadata?: unknown): RequestId {
    return Number(
      hostStorage.submitScore(
        board,
        BigInt(player),
        BigInt(Math.trunc(score)),
        BigInt(Math.trunc(subscore)),
        metadata === undefined ? undefined : JSON.stringify(metadata),
      ),
    );
  }

  topScores(board: string, limit: number, cursor?: string): RequestId {
    return Number(hostStorage.top(board, limit, cursor));
  }

  scoresAround(board: string, player: PlayerId, limit: number): RequestId {
    return Number(hostStorage.around(board, BigInt(player), limit));
  }
}

/**
 * A game: its name and version, and what it does at each event. Every function but
 * `init` is optional; `S` is the room's state.
 */
export interface Game<S> {
  /** The game's name (rooms are created by it). */
  name: string;
  /** This build's version: passed to `restore` of the next version after a live swap. */
  version: string;
  /** A new room's state. Throw to refuse the room (the message is the reason). */
  init(room: Room): S;
  /** A player asks to join. Throw to refuse it with the message. Default: accept. */
  join?(state: S, room: Room, player: Player): void;
  /** A member left (or was kicked, or disconnected for good). */
  leave?(state: S, room: Room, player: PlayerId, reason: LeaveReason): void;
  /** A member sent a message (bytes: `text(msg)` or `parseJson(msg)` to read it). */
  message?(state: S, room: Room, from: PlayerId, msg: Uint8Array): void;
  /** The answer to a storage request. Default: failures are logged at `warn`. */
  storage?(state: S, room: Room, id: RequestId, answer: Answer | StorageError, ok: boolean): void;
  /** Time passed: `dtMicros` since the previous tick. */
  tick?(state: S, room: Room, dtMicros: number): void;
  /** The state as bytes, for a live swap or a checkpoint. Default: JSON. */
  save?(state: S): Uint8Array;
  /**
   * The state saved by `save` of `fromVersion` (this build, an older one, or the Rust
   * build of the same game). Throw to keep the room on its old version. Default: JSON.
   */
  restore?(room: Room, state: Uint8Array, fromVersion: string): S;
}

/** Declares a game (typing only: it returns `game`). */
export function defineGame<S>(game: Game<S>): Game<S> {
  return game;
}

function bytes(msg: Uint8Array | string): Uint8Array {
  return typeof msg === "string" ? encoder.encode(msg) : msg;
}

function objectKey(collection: string, key: string, owner?: PlayerId): hostStorage.ObjectKey {
  return { collection, key, owner: BigInt(owner ?? 0) };
}

function condition(c: Condition): hostStorage.Condition {
  if (c === "any") return { tag: "any" };
  if (c === "absent") return { tag: "absent" };
  return { tag: "version", val: BigInt(c.version) };
}

// ---- The export the host calls (`ludus:game/room`). Used by the build, not by games. ----

interface WitRoomInit {
  id: string;
  config: string;
  seed: bigint;
}

type WitResult<T, E> = { tag: "ok"; val: T } | { tag: "err"; val: E };

interface WitStorageResult {
  id: bigint;
  answer: WitResult<{ tag: string; val?: any }, { tag: string; val?: string }>;
}

function object(o: any): StoredObject {
  return {
    collection: o.at.collection,
    key: o.at.key,
    owner: o.at.owner === 0n ? undefined : Number(o.at.owner),
    value: o.value,
    version: Number(o.version),
    read: o.read,
    write: o.write,
    updatedMs: Number(o.updatedMs),
  };
}

function score(s: any): Score {
  return {
    rank: Number(s.rank),
    player: Number(s.player),
    name: s.name,
    score: Number(s.score),
    subscore: Number(s.subscore),
    metadata: s.metadata,
    submissions: Number(s.submissions),
    updatedMs: Number(s.updatedMs),
  };
}

function answer(a: { tag: string; val?: any }): Answer {
  switch (a.tag) {
    case "object":
    case "written":
      return { kind: a.tag, object: object(a.val) };
    case "objects":
      return { kind: "objects", objects: a.val.objects.map(object), cursor: a.val.cursor };
    case "scored":
      return { kind: "scored", score: score(a.val) };
    case "scores":
      return { kind: "scores", scores: a.val.scores.map(score), cursor: a.val.cursor };
    case "deleted":
      return { kind: "deleted" };
    default:
      return { kind: "defined" };
  }
}

/** An exception as the reason the host reports. */
function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The `room` export for a game: one room per instance, its state kept here. The build
 * generates `export const room = roomExport(game)`.
 */
export function roomExport<S>(game: Game<S>) {
  let state: S | undefined;
  let room: Room | undefined;
  const live = (): [S, Room] => {
    if (room === undefined) throw new Error("the room is not initialised");
    return [state as S, room];
  };
  // A result<_, string> export: return for ok, throw the reason for err.
  const fallible = (f: () => void) => {
    try {
      f();
    } catch (e) {
      throw reason(e);
    }
  };
  return {
    describe(): [string, string] {
      return [game.name, game.version];
    },
    init(init: WitRoomInit): void {
      fallible(() => {
        const r = new Room(init.id, init.config, init.seed);
        state = game.init(r);
        room = r;
      });
    },
    join(player: { id: bigint; name: string }): void {
      fallible(() => {
        const [s, r] = live();
        game.join?.(s, r, { id: Number(player.id), name: player.name });
      });
    },
    leave(player: bigint, why: LeaveReason): void {
      const [s, r] = live();
      game.leave?.(s, r, Number(player), why);
    },
    messages(batch: { from: bigint; payload: Uint8Array }[]): void {
      const [s, r] = live();
      if (!game.message) return;
      for (const m of batch) game.message(s, r, Number(m.from), m.payload);
    },
    storageResults(results: WitStorageResult[]): void {
      const [s, r] = live();
      for (const res of results) {
        const id = Number(res.id);
        if (res.answer.tag === "ok") {
          game.storage?.(s, r, id, answer(res.answer.val), true);
        } else {
          const err: StorageError = {
            kind: res.answer.val.tag as StorageError["kind"],
            detail: res.answer.val.val,
          };
          if (game.storage) game.storage(s, r, id, err, false);
          else r.log("warn", `storage request ${id} failed: ${err.kind}${err.detail ? `: ${err.detail}` : ""}`);
        }
      }
    },
    tick(dtMicros: bigint): void {
      const [s, r] = live();
      game.tick?.(s, r, Number(dtMicros));
    },
    save(): Uint8Array {
      let out: Uint8Array | undefined;
      fallible(() => {
        const [s] = live();
        out = game.save ? game.save(s) : encoder.encode(JSON.stringify(s));
      });
      return out as Uint8Array;
    },
    restore(init: WitRoomInit, saved: Uint8Array, fromVersion: string): void {
      fallible(() => {
        const r = new Room(init.id, init.config, init.seed);
        if (game.restore) {
          state = game.restore(r, saved, fromVersion);
        } else {
          try {
            state = JSON.parse(decoder.decode(saved)) as S;
          } catch (e) {
            throw new Error(`cannot restore state saved by version ${fromVersion}: ${reason(e)}`);
          }
        }
        room = r;
      });
    },
  };
}
