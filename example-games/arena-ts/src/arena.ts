// Arena: a real-time game, the same rules as the Rust arena (example-games/arena), so
// the two play alike and a room can be swapped live from one to the other.
//
// Players spawn at (500, 500) on a 1000 x 1000 field and move by sending inputs; every
// tick each member gets a snapshot of everyone.
//
// Client -> room: {"seq": 7, "dx": 3, "dy": -2}. An input is applied only if its seq is
// higher than the last one applied for that player; the step is clamped to
// [-maxStep, maxStep] on each axis and the position to [0, 1000].
//
// Room -> client, every tick:
// {"tick": 12, "rules": 1, "players": [{"id": 1, "x": 503, "y": 498, "seq": 7}]}.
// A malformed input gets {"error": "bad input: ..."} back to its sender. Inputs are held
// until the tick: each tick applies what came since the last one, then sends the snapshot.
//
// Room config: {"max_players": 8, "tick_hz": 20} (defaults 8 and the host's rate).
//
// Rules version 2 (../arena-ts-v2): steps of up to 20, and each player counts its applied
// inputs (`moves`), which starts at 0 in a room swapped live from version 1.
import { defineGame, parseJson, Reject, type Game, type PlayerId } from "@ludus/game";

const FIELD = 1000;
const SPAWN = 500;
const DEFAULT_MAX_PLAYERS = 8;
const U32_MAX = 0xffff_ffff;
const I32_MIN = -0x8000_0000;
const I32_MAX = 0x7fff_ffff;

interface Avatar {
  x: number;
  y: number;
  /** The last input sequence number applied. */
  seq: number;
  /** Inputs applied so far (version 2). */
  moves?: number;
}

/** The saved state: the same JSON as the Rust arena's. */
interface State {
  max_players: number;
  tick: number;
  players: Record<string, Avatar>;
}

interface Input {
  seq: number;
  dx: number;
  dy: number;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

/** `value[field]` if it is an integer in [lo, hi]; otherwise throws why. */
function integer(value: Record<string, unknown>, field: string, lo: number, hi: number): number {
  const v = value[field];
  if (v === undefined) throw new Error(`missing field \`${field}\``);
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
    throw new Error(`\`${field}\` must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function readInput(msg: Uint8Array): Input {
  const value = parseJson<unknown>(msg);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("expected an object like {\"seq\": 1, \"dx\": 0, \"dy\": 0}");
  }
  const v = value as Record<string, unknown>;
  return {
    seq: integer(v, "seq", 0, Number.MAX_SAFE_INTEGER),
    dx: integer(v, "dx", I32_MIN, I32_MAX),
    dy: integer(v, "dy", I32_MIN, I32_MAX),
  };
}

export function arena(rules: 1 | 2): Game<State> {
  const maxStep = rules === 1 ? 10 : 20;
  return defineGame<State>({
    name: "arena",
    version: rules === 1 ? "1.0.0" : "2.0.0",

    init(room) {
      const config = room.configJson<Record<string, unknown>>();
      const maxPlayers =
        config.max_players === undefined
          ? DEFAULT_MAX_PLAYERS
          : integer(config, "max_players", 0, Number.MAX_SAFE_INTEGER);
      if (maxPlayers === 0) throw new Reject("max_players must be at least 1");
      if (config.tick_hz !== undefined && config.tick_hz !== null) {
        room.setTickRate(integer(config, "tick_hz", 0, U32_MAX));
      }
      // Inputs show only in the next snapshot: take them all just before the tick.
      room.holdMessagesUntilTick(true);
      return { max_players: maxPlayers, tick: 0, players: {} };
    },

    join(state, _room, player) {
      if (Object.keys(state.players).length >= state.max_players) {
        throw new Reject(`room is full (${state.max_players} players)`);
      }
      state.players[player.id] =
        rules === 1 ? { x: SPAWN, y: SPAWN, seq: 0 } : { x: SPAWN, y: SPAWN, seq: 0, moves: 0 };
    },

    leave(state, _room, player) {
      delete state.players[player];
    },

    message(state, room, from, msg) {
      let input: Input;
      try {
        input = readInput(msg);
      } catch (e) {
        room.sendJson(from, { error: `bad input: ${(e as Error).message}` });
        return;
      }
      const avatar = state.players[from];
      if (avatar === undefined || input.seq <= avatar.seq) return;
      avatar.seq = input.seq;
      avatar.x = clamp(avatar.x + clamp(input.dx, -maxStep, maxStep), 0, FIELD);
      avatar.y = clamp(avatar.y + clamp(input.dy, -maxStep, maxStep), 0, FIELD);
      if (rules === 2) avatar.moves = (avatar.moves ?? 0) + 1;
    },

    tick(state, room) {
      state.tick += 1;
      const ids: PlayerId[] = Object.keys(state.players)
        .map(Number)
        .sort((a, b) => a - b);
      room.broadcastJson({
        tick: state.tick,
        rules,
        players: ids.map((id) => ({ id, ...state.players[id] })),
      });
    },

    restore(_room, saved, fromVersion) {
      let state: State;
      try {
        state = parseJson<State>(saved);
      } catch (e) {
        throw new Error(`cannot restore state saved by version ${fromVersion}: ${(e as Error).message}`);
      }
      for (const avatar of Object.values(state.players)) {
        if (rules === 2) avatar.moves ??= 0;
        else delete avatar.moves;
      }
      return state;
    },
  });
}
