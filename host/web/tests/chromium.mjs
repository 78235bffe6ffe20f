// What the page scripts share: headless Chromium (Debian's, or $CHROMIUM) through
// Playwright, and failing with a message the Rust test shows.
import { chromium } from "playwright-core";

export const fail = msg => { console.error("FAIL: " + msg); process.exit(1); };

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
