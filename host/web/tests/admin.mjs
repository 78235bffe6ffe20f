// Drives the admin page in headless Chromium: opens it with the admin token, finds the
// test's room and shows its saved state as JSON, deploys arena v2 from a file (accepting
// the confirmation), then rolls back (after one dismissed confirmation that must change
// nothing). Usage: node admin.mjs <admin url> <token> <arena-v2.wasm>. Exit 0: every check held.
import { chromium } from "playwright-core";

const [url, token, v2] = process.argv.slice(2);
const fail = msg => { console.error("FAIL: " + msg); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  page.on("console", m => console.error("page: " + m.text()));
  let answer = "accept";
  const dialogs = [];
  page.on("dialog", d => { dialogs.push(d.message()); answer === "accept" ? d.accept() : d.dismiss(); });
  await page.goto(url);

  // A wrong token is refused and said so.
  await page.fill("#token", "not the token");
  await page.click("#enter");
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("admin token"), null, { timeout: 10000 });

  await page.fill("#token", token);
  await page.click("#enter");
  await page.waitForSelector("#game-arena", { timeout: 10000 });
  const version = () => page.textContent("#game-arena .version");
  if ((await version()) !== "1.0.0") fail(`arena runs ${await version()} at first`);

  // The room, filtered by game and node, and its saved state as JSON.
  await page.selectOption("#filter-game", "arena");
  const node = await page.evaluate(() => window.admin.overview.node);
  await page.selectOption("#filter-node", node);
  await page.waitForSelector('tr.room[data-id="watched"]', { timeout: 10000 });
  await page.click('tr.room[data-id="watched"]');
  await page.waitForFunction(() => window.admin.state && window.admin.state.room === "watched", null, { timeout: 10000 });
  const state = await page.evaluate(() => window.admin.state.state);
  if (!state.json || typeof state.json !== "object") fail(`state not shown as JSON: ${JSON.stringify(state)}`);
  const shown = await page.textContent("#state");
  JSON.parse(shown);

  // Deploy v2 from a file: confirmed, every room swaps.
  await page.setInputFiles("#deploy-file-arena", v2);
  await page.click("#deploy-arena");
  await page.waitForFunction(() => document.querySelector("#game-arena .version").textContent === "2.0.0", null, { timeout: 20000 });
  console.log("DEPLOYED");

  // A dismissed confirmation changes nothing.
  answer = "dismiss";
  await page.click("#rollback-arena");
  await page.waitForFunction(() => document.querySelector("#message").textContent.includes("cancelled"), null, { timeout: 5000 });
  await page.waitForTimeout(500);
  if ((await version()) !== "2.0.0") fail("a dismissed rollback changed the version");

  answer = "accept";
  await page.click("#rollback-arena");
  await page.waitForFunction(() => document.querySelector("#game-arena .version").textContent === "1.0.0", null, { timeout: 20000 });
  if (dialogs.length !== 3) fail(`expected 3 confirmations, saw ${JSON.stringify(dialogs)}`);
  console.log("DONE " + JSON.stringify({ node, dialogs }));
} finally {
  await browser.close();
}
