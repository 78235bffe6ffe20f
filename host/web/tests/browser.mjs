// Plays the arena page in headless Chromium: moves with the keyboard, waits for the
// test to swap arena v1 -> v2 live (it prints "SWAP" and the test rewrites the module
// file), then checks the page kept its position, shows v2, and still moves, without a
// reload. Usage: node browser.mjs <page url>. Exit status 0 means every check held.
import { fail, launch } from "./chromium.mjs";

const url = process.argv[2];

const browser = await launch();
try {
  const page = await browser.newPage();
  page.on("console", m => console.error("page: " + m.text()));
  await page.goto(url);
  await page.evaluate(() => { window.loadMarker = "first load"; });
  await page.waitForFunction(() => window.ludus && window.ludus.me() !== null, null, { timeout: 20000 });
  const start = await page.evaluate(() => window.ludus.me());

  await page.keyboard.down("ArrowRight");
  await page.waitForFunction(x0 => window.ludus.me().x >= x0 + 30, start.x, { timeout: 10000 });
  await page.keyboard.up("ArrowRight");
  await page.waitForTimeout(300); // the last inputs land
  const moved = await page.evaluate(() => window.ludus.me());
  if (moved.x <= start.x) fail(`arrow right did not move: ${JSON.stringify({ start, moved })}`);
  if (await page.evaluate(() => window.ludus.rules) !== 1) fail("expected arena rules v1 before the swap");

  console.log("SWAP");
  await page.waitForFunction(() => window.ludus.rules === 2, null, { timeout: 20000 });
  const swapped = await page.evaluate(() => window.ludus.me());
  if (swapped.x !== moved.x || swapped.y !== moved.y) {
    fail(`position changed across the swap: ${JSON.stringify({ moved, swapped })}`);
  }
  const version = await page.textContent("#version");
  if (!version.includes("rules v2")) fail(`page shows ${version}`);

  await page.keyboard.down("s");
  await page.waitForFunction(y0 => window.ludus.me().y >= y0 + 30, swapped.y, { timeout: 10000 });
  await page.keyboard.up("s");
  const after = await page.evaluate(() => window.ludus.me());
  if (await page.evaluate(() => window.loadMarker) !== "first load") fail("the page reloaded");
  const connects = await page.evaluate(() => window.ludus.connects);
  if (connects !== 1) fail(`the page had to reconnect (${connects} connections)`);
  console.log("DONE " + JSON.stringify({ start, moved, swapped, after, version }));
} finally {
  await browser.close();
}
