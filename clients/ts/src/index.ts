// The Ludus game client for browsers and Node: guest and device login, one WebSocket
// speaking binary Protobuf (`proto/client.proto`, generated with protoc-gen-es) or the
// JSON text mode, numbered frames with acks, and reconnection with exponential backoff
// and jitter that resumes the session: every server frame is delivered once, in order,
// and every call the client made reaches the server once, as long as it comes back
// within the server's grace period.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ErrorCode,
  ServerFrameSchema,
  type ClientFrame,
  type ServerFrame,
} from "./gen/client_pb.js";

export { ErrorCode } from "./gen/client_pb.js";

/** An error code by name, as the README lists them (`room_not_found`, ...). */
export type ErrorCodeName =
  | "unspecified" | "malformed" | "frame_too_large" | "rate_limited" | "room_not_found"
  | "no_such_game" | "refused" | "not_in_room" | "resume_failed" | "internal" | "no_ticket"
  | "room_quota" | "room_exists" | "unavailable" | "moved";

/** The server refused a call (an `error` frame). */
export class LudusError extends Error {
  constructor(
    readonly code: ErrorCodeName,
    message: string,
    /** The number of the client frame this answers (0: none). */
    readonly inReplyTo = 0,
    /** With `moved`: the node that holds the session now. */
    readonly address = "",
  ) {
    super(`${code}: ${message}`);
    this.name = "LudusError";
  }
}

/** An HTTP call (login, storage, leaderboards) answered with an error status. */
export class LudusHttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(`${status}: ${message}`);
    this.name = "LudusHttpError";
  }
}

export interface Welcome {
  playerId: number;
  sessionId: string;
  resumeToken: string;
  /** A resume of the same session (frames in between were replayed). */
  resumed: boolean;
  /** The session came back from storage after a node restart or move: frames after
   * its rooms' last checkpoints may be missing. */
  restored: boolean;
}

export interface Joined { roomId: string; game: string; version: string }

/** A game's message to this player. */
export class RoomMessage {
  constructor(readonly roomId: string, readonly payload: Uint8Array) {}
  /** The payload as UTF-8 text. */
  text(): string {
    return new TextDecoder().decode(this.payload);
  }
  /** The payload parsed as JSON (games such as arena speak JSON). */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

export interface MatchQueued { ticketId: string; game: string; mode: string }
export interface MatchFound {
  ticketId: string; roomId: string; game: string; mode: string; players: number;
}

/** Everything the client reports, by event name. */
export interface Events {
  welcome: Welcome;
  joined: Joined;
  left: { roomId: string };
  message: RoomMessage;
  error: LudusError;
  kicked: { roomId: string; reason: string };
  closed: { roomId: string; reason: string };
  matchQueued: MatchQueued;
  matchFound: MatchFound;
  matchCancelled: { ticketId: string; reason: string };
  /** The connection dropped; the client reconnects after `retryInMs`. */
  disconnected: { code: number; reason: string; retryInMs: number };
  /** The session is over for good (taken over elsewhere, ended, or the resume attempts
   * ran out): the client does not reconnect. */
  ended: { code: number; reason: string };
}

export interface Options {
  /** `binary` (Protobuf, the default) or `json` (the text mode). */
  format?: "binary" | "json";
  /** The WebSocket class (browsers and Node 22+ have one; on older Node pass `ws`). */
  WebSocket?: WebSocketClass;
  /** First reconnect delay, doubled per failed attempt up to `backoffMaxMs`; each wait
   * is drawn between half and all of it (jitter). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Failed reconnects in a row before the client gives up (`ended`). */
  maxAttempts?: number;
  /** How often the client acknowledges what arrived when it has nothing to send. */
  ackEveryMs?: number;
}

type WebSocketLike = {
  binaryType: string;
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
};
export type WebSocketClass = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Close codes after which the session cannot be resumed. */
const REPLACED = 4000, RESUME_FAILED = 4001, SESSION_ENDED = 4002, MOVED = 4006;
const OPEN = 1;

export interface Login { token: string; playerId: number; name: string; expiresAt: number }

/** `POST /v1/auth/guest`: a new guest, or with `deviceSecret` (16+ characters kept by
 * the client) the same player every time. */
export async function guestLogin(
  url: string,
  opts: { name?: string; deviceSecret?: string } = {},
): Promise<Login> {
  const body: Record<string, string> = { name: opts.name ?? "" };
  if (opts.deviceSecret !== undefined) body.device_secret = opts.deviceSecret;
  const j = await http(`${base(url)}/v1/auth/guest`, { method: "POST", body: JSON.stringify(body) });
  return { token: j.token, playerId: j.player_id, name: j.name, expiresAt: j.expires_at };
}

function base(url: string): string {
  return url.replace(/\/+$/, "");
}

async function http(url: string, init: RequestInit & { token?: string } = {}): Promise<any> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const r = await fetch(url, { ...init, headers });
  const text = await r.text();
  const j = text ? JSON.parse(text) : null;
  if (!r.ok) throw new LudusHttpError(r.status, j?.error ?? (text || r.statusText));
  return j;
}

type Pending = { resolve: (v: any) => void; reject: (e: Error) => void; match: (f: Frame) => boolean };

/** A server frame, the same whichever format carried it. */
type Frame = { seq: number; ack: number; kind: string; body: any };

/** A connected player. */
export class LudusClient {
  /** The player this client plays as. */
  playerId = 0;
  sessionId = "";
  /** WebSocket connections opened so far (1 until the first reconnect). */
  connects = 0;
  private ws: WebSocketLike | null = null;
  private resumeToken = "";
  private lastSeen = 0;
  private outSeq = 0;
  private unacked: { seq: number; body: any }[] = [];
  private pending = new Map<number, Pending>();
  private listeners: { [K in keyof Events]?: ((e: Events[K]) => void)[] } = {};
  private attempts = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private over = false;
  private readonly opts: Required<Omit<Options, "WebSocket">> & { WebSocket: WebSocketClass };
  private url: string;

  private constructor(url: string, readonly token: string, opts: Options) {
    this.url = base(url);
    const WS = opts.WebSocket ?? (globalThis as any).WebSocket;
    if (!WS) throw new Error("no WebSocket class: pass one as `WebSocket` (e.g. from the `ws` package)");
    this.opts = {
      format: opts.format ?? "binary",
      WebSocket: WS,
      backoffInitialMs: opts.backoffInitialMs ?? 1000,
      backoffMaxMs: opts.backoffMaxMs ?? 30000,
      maxAttempts: opts.maxAttempts ?? 8,
      ackEveryMs: opts.ackEveryMs ?? 1000,
    };
  }

  /** Logs in as a guest (`name`, and `deviceSecret` for the same player each time) and
   * connects. */
  static async guest(
    url: string,
    login: { name?: string; deviceSecret?: string } = {},
    opts: Options = {},
  ): Promise<LudusClient> {
    const { token } = await guestLogin(url, login);
    return LudusClient.connect(url, token, opts);
  }

  /** Connects with a token (a guest's, or one of an external issuer) and waits for the
   * welcome. */
  static async connect(url: string, token: string, opts: Options = {}): Promise<LudusClient> {
    const client = new LudusClient(url, token, opts);
    await client.open(false);
    client.timer = setInterval(() => client.write({ seq: 0, body: null }), client.opts.ackEveryMs);
    // In Node, the ack timer alone does not keep a program running.
    (client.timer as { unref?: () => void }).unref?.();
    return client;
  }

  /** The highest server frame number seen. */
  get lastSeenSeq(): number {
    return this.lastSeen;
  }

  on<K extends keyof Events>(event: K, listener: (e: Events[K]) => void): () => void {
    const list = (this.listeners[event] ??= []) as ((e: Events[K]) => void)[];
    list.push(listener);
    return () => list.splice(list.indexOf(listener) >>> 0, 1);
  }

  private emit<K extends keyof Events>(event: K, e: Events[K]): void {
    for (const l of (this.listeners[event] ?? []) as ((e: Events[K]) => void)[]) l(e);
  }

  /** Creates a room of `game` and joins it (an empty `roomId`: the server picks one). */
  createRoom(game: string, opts: { roomId?: string; config?: unknown } = {}): Promise<Joined> {
    const roomId = opts.roomId ?? "";
    const config = opts.config === undefined ? "" : JSON.stringify(opts.config);
    return this.call("create", { game, room_id: roomId, config }, f =>
      f.kind === "joined" && (roomId === "" || f.body.room_id === roomId)).then(joined);
  }

  joinRoom(roomId: string): Promise<Joined> {
    return this.call("join", { room_id: roomId }, f => f.kind === "joined" && f.body.room_id === roomId)
      .then(joined);
  }

  leaveRoom(roomId: string): Promise<void> {
    return this.call("leave", { room_id: roomId }, f => f.kind === "left" && f.body.room_id === roomId)
      .then(() => undefined);
  }

  /** A message to a room's game: bytes as they are, anything else as JSON. */
  send(roomId: string, payload: Uint8Array | unknown): void {
    const bytes = payload instanceof Uint8Array ? payload : new TextEncoder().encode(JSON.stringify(payload));
    this.numbered("message", { room_id: roomId, payload: bytes });
  }

  /** Asks the matchmaker for a room of `game` with players of the same `mode` and
   * `properties`; `matchFound` follows when there is one. */
  findMatch(game: string, opts: { mode?: string; properties?: Record<string, string> } = {}): Promise<MatchQueued> {
    const body = { game, mode: opts.mode ?? "", properties: opts.properties ?? {} };
    return this.call("find_match", body, f => f.kind === "match_queued").then(b => ({
      ticketId: b.ticket_id, game: b.game, mode: b.mode,
    }));
  }

  cancelMatch(): Promise<void> {
    return this.call("cancel_match", {}, f => f.kind === "match_cancelled").then(() => undefined);
  }

  /** A round trip to the server, in milliseconds. */
  async ping(): Promise<number> {
    const nonce = Math.floor(Math.random() * 2 ** 32);
    const start = Date.now();
    await this.call("ping", { nonce }, f => f.kind === "pong" && Number(f.body.nonce) === nonce);
    return Date.now() - start;
  }

  // Storage and leaderboards, over HTTP with the player's token.

  /** One object (another player's with `owner`: only if it is public). */
  getObject<T = unknown>(collection: string, key: string, opts: { owner?: number } = {}): Promise<StoredObject<T>> {
    return this.rest("GET", `/v1/storage/${enc(collection)}/${enc(key)}${query(opts)}`).then(stored<T>);
  }

  /** Writes an object; `version` makes it conditional (0: only if absent). */
  putObject<T = unknown>(
    collection: string,
    key: string,
    value: T,
    opts: { version?: number; read?: "owner" | "public" | "none"; write?: "owner" | "none" } = {},
  ): Promise<StoredObject<T>> {
    const body = JSON.stringify({ value, ...opts });
    return this.rest("PUT", `/v1/storage/${enc(collection)}/${enc(key)}`, body).then(stored<T>);
  }

  async deleteObject(collection: string, key: string, opts: { version?: number } = {}): Promise<void> {
    await this.rest("DELETE", `/v1/storage/${enc(collection)}/${enc(key)}${query(opts)}`);
  }

  async listObjects<T = unknown>(
    collection: string,
    opts: { owner?: number; limit?: number; cursor?: string } = {},
  ): Promise<{ objects: StoredObject<T>[]; cursor: string | null }> {
    const j = await this.rest("GET", `/v1/storage/${enc(collection)}${query(opts)}`);
    return { objects: j.objects.map(stored<T>), cursor: j.cursor ?? null };
  }

  /** The top of a leaderboard, and this player's own record. */
  async leaderboard(id: string, opts: { limit?: number; cursor?: string } = {}): Promise<{
    records: LeaderboardRecord[]; cursor: string | null; mine: LeaderboardRecord | null;
  }> {
    const j = await this.rest("GET", `/v1/leaderboards/${enc(id)}${query(opts)}`);
    return { records: j.records.map(record), cursor: j.cursor ?? null, mine: j.mine ? record(j.mine) : null };
  }

  async leaderboardAround(id: string, player: number, opts: { limit?: number } = {}): Promise<LeaderboardRecord[]> {
    const j = await this.rest("GET", `/v1/leaderboards/${enc(id)}/around/${player}${query(opts)}`);
    return j.records.map(record);
  }

  /** Ends the session (close code 1000): the player leaves its rooms at once. */
  close(): void {
    this.finish(1000, "closed by the client", false);
  }

  /** Drops the connection without ending the session, as a network failure would (the
   * client then reconnects and resumes). For tests and the curious. */
  dropConnection(): void {
    this.ws?.close(3000, "dropped by the client");
  }

  private rest(method: string, path: string, body?: string): Promise<any> {
    return http(`${this.url}${path}`, { method, body, token: this.token });
  }

  /** Sends a numbered frame and waits for its answer: the first frame `match` takes, or
   * an error frame answering it. */
  private call(kind: string, body: any, match: (f: Frame) => boolean): Promise<any> {
    return new Promise((resolve, reject) => {
      const seq = this.numbered(kind, body);
      this.pending.set(seq, { resolve, reject, match });
    });
  }

  private numbered(kind: string, value: any): number {
    this.outSeq += 1;
    const frame = { seq: this.outSeq, body: { [kind]: value } };
    this.unacked.push(frame);
    this.write(frame);
    return frame.seq;
  }

  private write(frame: { seq: number; body: any }): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return; // resent after the resume
    ws.send(encode(this.opts.format, frame.seq, this.lastSeen, frame.body));
  }

  private socketUrl(resume: boolean): string {
    const ws = this.url.replace(/^http/, "ws");
    let url = `${ws}/v1/ws?format=${this.opts.format}&token=${enc(this.token)}`;
    if (resume && this.resumeToken) url += `&resume=${enc(this.resumeToken)}&last_seen=${this.lastSeen}`;
    return url;
  }

  /** Opens a connection and resolves at its welcome (rejects if it closes first). */
  private open(resume: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new this.opts.WebSocket(this.socketUrl(resume));
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      this.connects += 1;
      let welcomed = false;
      ws.onmessage = ev => {
        let frame: Frame;
        try {
          frame = decode(ev.data);
        } catch (e) {
          console.error("ludus: a frame that does not decode:", e);
          return;
        }
        if (!welcomed && frame.kind === "welcome") {
          welcomed = true;
          this.welcome(frame);
          resolve();
          return;
        }
        if (!welcomed && frame.kind === "error") {
          const e = toError(frame.body);
          if (e.code === "moved" && e.address) this.url = this.url.replace(/\/\/[^/]+/, `//${e.address}`);
          reject(e);
          return;
        }
        this.frame(frame);
      };
      ws.onclose = ev => {
        if (this.ws !== ws) return;
        this.ws = null;
        if (!welcomed) reject(new LudusHttpError(ev.code, ev.reason || "the connection closed before the welcome"));
        else this.dropped(ev.code, ev.reason);
      };
      ws.onerror = () => {}; // onclose follows
    });
  }

  private welcome(frame: Frame): void {
    const w = frame.body;
    const welcome: Welcome = {
      playerId: Number(w.player_id), sessionId: w.session_id, resumeToken: w.resume_token,
      resumed: !!w.resumed, restored: !!w.restored,
    };
    if (!welcome.resumed) {
      // A new session: frames numbered before belong to the old one.
      this.lastSeen = 0;
      this.outSeq = 0;
      for (const p of this.pending.values()) p.reject(new LudusError("resume_failed", "the session was lost"));
      this.pending.clear();
      this.unacked = [];
    }
    this.playerId = welcome.playerId;
    this.sessionId = welcome.sessionId;
    this.resumeToken = welcome.resumeToken;
    this.attempts = 0;
    if (frame.seq) this.lastSeen = frame.seq;
    this.acknowledged(frame.ack);
    for (const f of this.unacked) this.write(f);
    this.emit("welcome", welcome);
  }

  private acknowledged(ack: number): void {
    while (this.unacked.length && this.unacked[0].seq <= ack) this.unacked.shift();
  }

  private frame(frame: Frame): void {
    this.acknowledged(frame.ack);
    if (frame.seq) {
      if (frame.seq <= this.lastSeen) return; // replayed twice: already delivered
      this.lastSeen = frame.seq;
    }
    const b = frame.body;
    if (frame.kind === "error") {
      const e = toError(b);
      if (e.code === "moved" && e.address) this.url = this.url.replace(/\/\/[^/]+/, `//${e.address}`);
      const waiting = this.pending.get(e.inReplyTo);
      if (waiting) {
        this.pending.delete(e.inReplyTo);
        waiting.reject(e);
      }
      this.emit("error", e);
      return;
    }
    for (const [seq, p] of this.pending) {
      if (p.match(frame)) {
        this.pending.delete(seq);
        p.resolve(b);
        break;
      }
    }
    switch (frame.kind) {
      case "joined": return this.emit("joined", joined(b));
      case "left": return this.emit("left", { roomId: b.room_id });
      case "message": return this.emit("message", new RoomMessage(b.room_id, b.payload));
      case "kicked": return this.emit("kicked", { roomId: b.room_id, reason: b.reason });
      case "closed": return this.emit("closed", { roomId: b.room_id, reason: b.reason });
      case "match_queued":
        return this.emit("matchQueued", { ticketId: b.ticket_id, game: b.game, mode: b.mode });
      case "match_found":
        return this.emit("matchFound", {
          ticketId: b.ticket_id, roomId: b.room_id, game: b.game, mode: b.mode, players: b.players,
        });
      case "match_cancelled":
        return this.emit("matchCancelled", { ticketId: b.ticket_id, reason: b.reason });
    }
  }

  private dropped(code: number, reason: string): void {
    if (this.over) return;
    if (code === REPLACED || code === SESSION_ENDED) return this.finish(code, reason, true);
    const resume = code !== RESUME_FAILED;
    const delay = code === MOVED ? 0 : this.backoff();
    this.emit("disconnected", { code, reason, retryInMs: delay });
    setTimeout(() => this.reconnect(resume), delay);
  }

  /** The next wait: exponential in the attempts, drawn between half and all of it. */
  private backoff(): number {
    const full = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** this.attempts);
    return full / 2 + Math.random() * (full / 2);
  }

  private reconnect(resume: boolean): void {
    if (this.over) return;
    this.attempts += 1;
    this.open(resume).catch(e => {
      if (this.over) return;
      if (this.attempts >= this.opts.maxAttempts) {
        return this.finish(0, `gave up after ${this.attempts} attempts: ${e.message}`, true);
      }
      // A session the server no longer knows: start a new one.
      const again = resume && !(e instanceof LudusError && e.code === "resume_failed");
      const delay = e instanceof LudusError && e.code === "moved" ? 0 : this.backoff();
      this.emit("disconnected", { code: 0, reason: String(e.message), retryInMs: delay });
      setTimeout(() => this.reconnect(again), delay);
    });
  }

  private finish(code: number, reason: string, report: boolean): void {
    if (this.over) return;
    this.over = true;
    if (this.timer) clearInterval(this.timer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "bye");
    for (const p of this.pending.values()) p.reject(new LudusError("unavailable", reason));
    this.pending.clear();
    if (report) this.emit("ended", { code, reason });
  }
}

export interface StoredObject<T> {
  collection: string; key: string; owner: number; value: T; version: number;
  read: "owner" | "public" | "none"; write: "owner" | "none";
  /** When it was last written, in Unix milliseconds. */
  updatedMs: number;
}

export interface LeaderboardRecord {
  rank: number; owner: number; username: string; score: number; subscore: number;
  metadata: unknown; submissions: number; updatedMs: number;
}

function stored<T>(j: any): StoredObject<T> {
  return {
    collection: j.collection, key: j.key, owner: j.owner, value: j.value as T, version: j.version,
    read: j.read, write: j.write, updatedMs: j.updated_ms,
  };
}

function record(j: any): LeaderboardRecord {
  return {
    rank: j.rank, owner: j.owner, username: j.username, score: j.score, subscore: j.subscore,
    metadata: j.metadata ?? null, submissions: j.submissions, updatedMs: j.updated_ms,
  };
}

function joined(b: any): Joined {
  return { roomId: b.room_id, game: b.game, version: b.version };
}

function toError(b: any): LudusError {
  const code = typeof b.code === "number" ? codeName(b.code) : (b.code as ErrorCodeName);
  return new LudusError(code, b.message ?? "", Number(b.in_reply_to ?? 0), b.address ?? "");
}

function codeName(code: number): ErrorCodeName {
  const name = ErrorCode[code];
  return (name ? name.toLowerCase() : "unspecified") as ErrorCodeName;
}

const enc = encodeURIComponent;

function query(opts: Record<string, string | number | undefined>): string {
  const q = Object.entries(opts).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${enc(String(v))}`);
  return q.length ? `?${q.join("&")}` : "";
}

// The two formats. A frame's body travels as `{kind: fields}` with the proto's field
// names, as the JSON text mode spells it; binary frames convert to and from it.

const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const snake = (s: string) => s.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`);

function encode(format: "binary" | "json", seq: number, ack: number, body: any): string | Uint8Array {
  const [kind, value] = body ? Object.entries(body)[0] : [undefined, undefined];
  if (format === "json") {
    const v = kind === "message" ? { ...(value as any), payload: jsonPayload((value as any).payload) } : value;
    return JSON.stringify({ seq, ack, body: kind ? { [kind]: v } : undefined });
  }
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries((value ?? {}) as object)) {
    fields[camel(k)] = k === "nonce" ? BigInt(v as number) : v;
  }
  const frame: ClientFrame = create(ClientFrameSchema, {
    seq: BigInt(seq),
    ack: BigInt(ack),
    body: kind ? ({ case: camel(kind), value: fields } as any) : { case: undefined },
  });
  return toBinary(ClientFrameSchema, frame);
}

/** A payload in the JSON mode is a JSON value: the game gets its JSON text. */
function jsonPayload(bytes: Uint8Array): unknown {
  const text = new TextDecoder().decode(bytes);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error("in the JSON format a room message must be JSON; connect with format \"binary\" for other bytes");
  }
}

function decode(data: unknown): Frame {
  if (typeof data === "string") {
    const j = JSON.parse(data);
    const [kind, value] = j.body ? Object.entries(j.body)[0] : ["", {}];
    const body: any = value ?? {};
    if (kind === "message") {
      // The payload arrives as the JSON it was (or a string of the text, if not JSON).
      // (A game's JSON string arrives without its quotes: the text mode cannot tell it
      // from bytes that are not JSON. Use the binary format where that matters.)
      const p = body.payload;
      body.payload = new TextEncoder().encode(typeof p === "string" ? p : JSON.stringify(p));
    }
    return { seq: Number(j.seq ?? 0), ack: Number(j.ack ?? 0), kind, body };
  }
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
  const f: ServerFrame = fromBinary(ServerFrameSchema, bytes);
  const body: any = {};
  if (f.body.case) {
    for (const [k, v] of Object.entries(f.body.value)) {
      if (k.startsWith("$")) continue;
      body[snake(k)] = typeof v === "bigint" ? Number(v) : v;
    }
  }
  return { seq: Number(f.seq), ack: Number(f.ack), kind: f.body.case ? snake(f.body.case) : "", body };
}
