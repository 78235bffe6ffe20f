// The TypeScript client against a real node (LUDUS_URL; host/tests/ts_client.rs starts
// one with arena, a leaderboard `ts.wins` and matchmaking, then runs `node --test`).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { LudusClient, LudusError, LudusHttpError, guestLogin } from "../dist/index.js";

const URL_ = process.env.LUDUS_URL;
if (!URL_) throw new Error("set LUDUS_URL to a running node (host/tests/ts_client.rs does)");
const opts = { WebSocket, backoffInitialMs: 50, backoffMaxMs: 400 };

/** A guest client that is closed when test `t` ends (passed or not). */
async function guest(t, name, extra = {}) {
  const c = await LudusClient.guest(URL_, { name }, { ...opts, ...extra });
  t.after(() => c.close());
  return c;
}

/** A room id no earlier run used (the node may be reused). */
const fresh = name => `${name}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

/** The next message event that `pred` accepts, within `ms`. */
function next(client, pred, ms = 10000, event = "message") {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no matching ${event} within ${ms} ms`)); }, ms);
    const off = client.on(event, e => {
      if (pred(e)) { clearTimeout(timer); off(); resolve(e); }
    });
  });
}

/** The next arena snapshot of `room` in which `player`'s input `seq` is applied. */
function applied(client, room, player, seq) {
  return next(client, m => {
    if (m.roomId !== room) return false;
    const me = m.json().players?.find(p => p.id === player);
    return me?.seq === seq;
  }).then(m => m.json().players.find(p => p.id === player));
}

for (const format of ["binary", "json"]) {
  test(`plays arena in the ${format} format`, async t => {
    const c = await guest(t, `ts-${format}`, { format });
    assert.ok(c.playerId > 0);
    const room = fresh(`ts-${format}`);
    const joined = await c.createRoom("arena", { roomId: room });
    assert.deepEqual([joined.roomId, joined.game], [room, "arena"]);
    const before = (await applied(c, room, c.playerId, 0));
    c.send(room, { seq: 1, dx: 5, dy: 0 });
    const after = await applied(c, room, c.playerId, 1);
    assert.equal(after.x, before.x + 5);
    assert.ok((await c.ping()) >= 0);
    await c.leaveRoom(room);
  });
}

test("a refused call rejects with the error code by name", async t => {
  for (const format of ["binary", "json"]) {
    const c = await guest(t, "refused", { format });
    await assert.rejects(c.joinRoom("no-such-room"), e => e instanceof LudusError && e.code === "room_not_found");
    await assert.rejects(c.createRoom("no-such-game"), e => e instanceof LudusError && e.code === "no_such_game");
    await assert.rejects(c.cancelMatch(), e => e instanceof LudusError && e.code === "no_ticket");
  }
});

test("a dropped connection resumes: every frame once, in order, and the input sent meanwhile once", async t => {
  const c = await guest(t, "dropper");
  const room = fresh("ts-resume");
  await c.createRoom("arena", { roomId: room });
  const start = await applied(c, room, c.playerId, 0);
  const seqs = [];
  c.on("message", () => seqs.push(c.lastSeenSeq));
  const welcomes = [];
  c.on("welcome", w => welcomes.push(w));
  await next(c, () => seqs.length >= 5);

  c.dropConnection();
  c.send(room, { seq: 1, dx: 7, dy: 0 }); // while down: sent after the resume
  const moved = await applied(c, room, c.playerId, 1);
  assert.equal(moved.x, start.x + 7, "the input applied once");
  await next(c, () => true);
  assert.equal(c.connects, 2, "one reconnect");
  assert.equal(welcomes.length, 1);
  assert.equal(welcomes[0].resumed, true, "the same session");
  for (let i = 1; i < seqs.length; i++) {
    assert.equal(seqs[i], seqs[i - 1] + 1, `frames lost or doubled: ${seqs.join(",")}`);
  }
});

test("guest and device logins", async t => {
  const secret = "a device secret of the ts test";
  const a = await guestLogin(URL_, { name: "dev", deviceSecret: secret });
  const b = await guestLogin(URL_, { name: "dev", deviceSecret: secret });
  const other = await guestLogin(URL_, { name: "dev" });
  assert.equal(a.playerId, b.playerId, "the same device is the same player");
  assert.notEqual(other.playerId, a.playerId);
  await assert.rejects(guestLogin(URL_, { name: "x".repeat(40) }), e => e instanceof LudusHttpError && e.status === 400);
  const c = await LudusClient.connect(URL_, a.token, opts);
  t.after(() => c.close());
  assert.equal(c.playerId, a.playerId);
});

test("storage and leaderboards", async t => {
  const c = await guest(t, "keeper");
  const other = await guest(t, "reader");
  const put = await c.putObject("ts.notes", "first", { hello: "world" }, { read: "public" });
  assert.equal(put.version, 1);
  assert.deepEqual((await c.getObject("ts.notes", "first")).value, { hello: "world" });
  await assert.rejects(
    c.putObject("ts.notes", "first", { again: true }, { version: 0 }),
    e => e instanceof LudusHttpError && e.status === 409,
  );
  const second = await c.putObject("ts.notes", "first", { hello: "again" }, { version: 1, read: "public" });
  assert.equal(second.version, 2);
  const seen = await other.getObject("ts.notes", "first", { owner: c.playerId });
  assert.deepEqual(seen.value, { hello: "again" }, "a public object is readable by others");
  const listed = await c.listObjects("ts.notes");
  assert.deepEqual(listed.objects.map(o => o.key), ["first"]);
  await c.deleteObject("ts.notes", "first");
  await assert.rejects(c.getObject("ts.notes", "first"), e => e instanceof LudusHttpError && e.status === 404);

  const board = await c.leaderboard("ts.wins");
  assert.deepEqual(board.records, []);
  assert.equal(board.mine, null);
  await assert.rejects(c.leaderboardAround("ts.wins", c.playerId), e => e instanceof LudusHttpError && e.status === 404,
    "no record of the player yet");
  await assert.rejects(c.leaderboard("no-such-board"), e => e instanceof LudusHttpError && e.status === 404);
});

test("matchmaking puts two players in one room", async t => {
  const [a, b] = await Promise.all([guest(t, "a"), guest(t, "b")]);
  const mode = fresh("duo");
  const found = [next(a, () => true, 15000, "matchFound"), next(b, () => true, 15000, "matchFound")];
  const queued = await a.findMatch("arena", { mode, properties: { region: "test" } });
  assert.equal(queued.game, "arena");
  await b.findMatch("arena", { mode, properties: { region: "test" } });
  const [fa, fb] = await Promise.all(found);
  assert.equal(fa.roomId, fb.roomId);
  assert.equal(fa.players, 2);
  const joined = await a.joinRoom(fa.roomId);
  assert.equal(joined.game, "arena");
});
