// The host's side of the contract (wit/game.wit, ludus:game@0.3.0) as the JS engine sees
// it: kebab-case names in camelCase, u64 as bigint, list<u8> as Uint8Array, enums as
// their names, variants as { tag, val }, options as the value or undefined.

declare module "ludus:game/host@0.3.0" {
  export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";
  export function send(to: bigint, msg: Uint8Array): void;
  export function broadcast(msg: Uint8Array): void;
  export function broadcastExcept(except: bigint, msg: Uint8Array): void;
  export function kick(player: bigint, reason: string): void;
  export function close(reason: string): void;
  export function setTickRate(hz: number): void;
  export function setLabel(label: string): void;
  export function setPrivate(isPrivate: boolean): void;
  export function holdMessages(untilTick: boolean): void;
  export function keepOpen(keep: boolean): void;
  export function nowMicros(): bigint;
  export function random(): bigint;
  export function log(level: LogLevel, msg: string): void;
}

declare module "ludus:game/storage@0.3.0" {
  export type ReadAccess = "none" | "owner" | "public";
  export type WriteAccess = "none" | "owner";
  export type Condition =
    | { tag: "any" }
    | { tag: "absent" }
    | { tag: "version"; val: bigint };
  export interface ObjectKey {
    collection: string;
    key: string;
    owner: bigint;
  }
  export interface ObjectWrite {
    at: ObjectKey;
    value: string;
    condition: Condition;
    read: ReadAccess;
    write: WriteAccess;
  }
  export interface Leaderboard {
    id: string;
    order: "descending" | "ascending";
    operator: "best" | "set" | "increment";
    resetEverySeconds?: bigint;
  }
  export function read(at: ObjectKey): bigint;
  export function write(object: ObjectWrite): bigint;
  export function delete_(at: ObjectKey, condition: Condition): bigint;
  export { delete_ as delete };
  export function list(
    collection: string,
    owner: bigint | undefined,
    limit: number,
    cursor: string | undefined,
  ): bigint;
  export function defineLeaderboard(board: Leaderboard): bigint;
  export function submitScore(
    board: string,
    player: bigint,
    score: bigint,
    subscore: bigint,
    metadata: string | undefined,
  ): bigint;
  export function top(board: string, limit: number, cursor: string | undefined): bigint;
  export function around(board: string, player: bigint, limit: number): bigint;
}
