// Watches the designer console of `ludus dev` in headless Chromium while the test edits
// the game (host/tests/dev.rs): the room, its player, its state and its messages show;
// then (after the test saves a rule change) a successful live swap; then (after it saves
// a syntax error) the compiler's error on the page. Prints READY and SWAPPED as it goes
// and DONE at the end. Usage: node console.mjs <console url> <room> <player id>.
import { fail, launch } from "./chromium.mjs";

const [url, room, player] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage();
  page.on("console", m => console.error("page: " + m.text()));
  await page.goto(`${url}?room=${encodeURIComponent(room)}`);
  const ready = () => {
    const r = window.dev.last && window.dev.last.room;
    return r && r.players.length > 0 && r.state !== null
      && r.messages.some(m => m.dir === "in") && r.messages.some(m => m.dir === "out");
  };
  await page.waitForFunction(ready, null, { timeout: 30000 }).catch(async () =>
    fail("the room never showed with players, state and messages: " +
         JSON.stringify(await page.evaluate(() => window.dev.last))));
  const rooms = await page.textContent("#rooms");
  if (!rooms.includes(room)) fail(`the room list does not show ${room}: ${rooms}`);
  const players = await page.textContent("#players");
  if (!players.includes(player)) fail(`the players do not show ${player}: ${players}`);
  // Arena saves its players by id.
  const state = JSON.parse(await page.textContent("#state"));
  if (!state.players || !(player in state.players)) {
    fail(`the state is not the game's save: ${JSON.stringify(state)}`);
  }
  const messages = await page.textContent("#messages");
  if (!messages.includes('"dx"')) fail(`the player's input is not among the messages: ${messages}`);
  if (!messages.includes('"tick"')) fail(`the game's snapshots are not among the messages: ${messages}`);
  console.log("READY");

  await page.waitForFunction(() => window.dev.last.swaps.some(s => !s.error && s.rooms >= 1), null, { timeout: 240000 })
    .catch(() => fail("no successful swap showed"));
  const swaps = await page.textContent("#swaps");
  if (!swaps.includes("ok")) fail(`the swap log does not say ok: ${swaps}`);
  console.log("SWAPPED");

  await page.waitForFunction(() => window.dev.last.builds.length > 0 && !window.dev.last.builds[0].ok, null, { timeout: 240000 })
    .catch(() => fail("the failed build never showed"));
  const build = await page.textContent("#build");
  const output = await page.textContent("#build-output");
  if (!build.includes("running version stays")) fail(`the build line says ${build}`);
  if (!output.includes("arena.ts")) fail(`the compiler's error does not name the file: ${output}`);
  console.log("DONE " + JSON.stringify({ build, output: output.slice(0, 200) }));
} finally {
  await browser.close();
}
