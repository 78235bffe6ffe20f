// `npm run build` (after tsc): bundles the client with its Protobuf runtime into one ES
// module for browsers, host/web/ludus-client.js, which every node serves at
// /ludus-client.js (the play page imports it). The bundle is committed, so a node needs
// no npm; CI rebuilds it and fails if the committed one differs.
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
await esbuild.build({
  entryPoints: [`${here}src/index.ts`],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  banner: { js: "// @ludus/client (clients/ts), bundled by clients/ts/build.mjs: do not edit." },
  outfile: `${here}../../host/web/ludus-client.js`,
  logLevel: "warning",
});
