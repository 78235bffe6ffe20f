#!/usr/bin/env node
// Builds a TypeScript (or JavaScript) Ludus game into a WebAssembly component.
//
//   node build.mjs <game dir> [--out FILE] [--json]
//
// The game dir holds a package.json whose `main` (default src/index.ts) default-exports
// a game made with `defineGame`. The game and this SDK are bundled into one ES module
// (esbuild), then componentized against the contract in ../wit/game.wit with
// componentize-js (the StarlingMonkey engine). The component lands in
// <game dir>/dist/<package name>.wasm unless --out says where. With --json the last
// line of stdout is {"wasm": path, "package": name, "bundle_ms": n, "componentize_ms": n}.
import { build } from "esbuild";
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdtemp, mkdir, readFile, writeFile, copyFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const sdk = dirname(fileURLToPath(import.meta.url));
const wit = resolve(sdk, "../wit/game.wit");

function fail(msg) {
  console.error(msg);
  process.exit(1);
}

const args = process.argv.slice(2);
let dir;
let out;
let json = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--out") out = args[++i];
  else if (args[i] === "--json") json = true;
  else if (args[i].startsWith("-")) fail(`unknown option ${args[i]}`);
  else dir = args[i];
}
if (!dir) fail("usage: node build.mjs <game dir> [--out FILE] [--json]");
dir = resolve(dir);

let pkg;
try {
  pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
} catch (e) {
  fail(`${dir} is not a TypeScript game: reading its package.json: ${e.message}`);
}
const name = pkg.name;
if (typeof name !== "string" || name === "") fail(`${dir}/package.json has no "name"`);
const main = resolve(dir, pkg.main ?? "src/index.ts");
if (!existsSync(main)) fail(`${dir}: the game's entry ${main} does not exist (set "main" in package.json)`);
if (!existsSync(wit)) fail(`the contract ${wit} is missing: this SDK builds from the Ludus repository`);

const dist = join(dir, "dist");
await mkdir(dist, { recursive: true });
out = resolve(out ?? join(dist, `${name.replace(/^@.*\//, "")}.wasm`));
const work = await mkdtemp(join(tmpdir(), "ludus-ts-"));
try {
  // The entry: the game's default export as the `room` interface.
  const entry = join(work, "entry.ts");
  await writeFile(
    entry,
    `import game from ${JSON.stringify(main)};\n` +
      `import { roomExport } from "@ludus/game";\n` +
      `export const room = roomExport(game);\n`,
  );
  const bundled = join(work, "game.js");
  const t0 = performance.now();
  try {
    await build({
      entryPoints: [entry],
      bundle: true,
      format: "esm",
      platform: "neutral",
      target: "es2022",
      outfile: bundled,
      external: ["ludus:game/*"],
      alias: { "@ludus/game": join(sdk, "src/index.ts") },
      nodePaths: [join(sdk, "node_modules")],
      logLevel: "silent",
      sourcemap: false,
    });
  } catch (e) {
    const errors = (e.errors ?? [])
      .map((m) =>
        m.location
          ? `${m.location.file}:${m.location.line}:${m.location.column}: error: ${m.text}\n    ${m.location.lineText}`
          : `error: ${m.text}`,
      )
      .join("\n");
    fail(errors || String(e));
  }
  const t1 = performance.now();
  // componentize-js reads a WIT directory: one holding only the current contract.
  const witDir = join(work, "wit");
  await mkdir(witDir);
  await copyFile(wit, join(witDir, "game.wit"));
  let component;
  try {
    ({ component } = await componentize({
      sourcePath: bundled,
      witPath: witDir,
      worldName: "game",
      // The engine keeps console output (the room log), Math.random (the room's seeded
      // stream) and clocks (the host's); no HTTP.
      disableFeatures: ["http", "fetch-event"],
    }));
  } catch (e) {
    fail(`componentizing ${name} failed: ${e.message ?? e}`);
  }
  const t2 = performance.now();
  await writeFile(out, component);
  const report = {
    wasm: out,
    package: name,
    bundle_ms: Math.round(t1 - t0),
    componentize_ms: Math.round(t2 - t1),
  };
  if (json) console.log(JSON.stringify(report));
  else console.log(`built ${out} (${component.length} bytes) in ${Math.round(t2 - t0)} ms`);
} finally {
  await rm(work, { recursive: true, force: true });
}
