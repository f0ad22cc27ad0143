// Fails when proto/ breaks the released contract: `buf breaking` (the FILE rules of the proto module in
// buf.yaml) of the working tree against proto-baseline/portcullis-v1.json, the buf image of the last
// release. Clients built against a release must keep working, so a break is either a mistake or a new
// major version. `--update` rewrites the baseline from the working tree; that is done on release only
// (README, "Releasing the contract"). `--workspace DIR` checks another copy of the repo (the tests use it).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const MODULE = "proto";
const BASELINE = join("proto-baseline", "portcullis-v1.json");
const RELEASING = "see README 'Releasing the contract'";

const { values: options } = parseArgs({
  options: { update: { type: "boolean", default: false }, workspace: { type: "string" } },
});
const buf = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));
const workspace = resolve(options.workspace ?? fileURLToPath(new URL("..", import.meta.url)));
const baseline = join(workspace, BASELINE);

const run = (args) => spawnSync(buf, args, { cwd: workspace, encoding: "utf8", maxBuffer: 64 << 20 });
const fail = (message) => {
  console.error(message.replace(/\s*\n\s*/g, " ").trim());
  process.exit(1);
};

if (options.update) {
  // The image keeps the imports (buf cannot check against an image whose imports are missing) but no
  // source info, and is pretty-printed JSON: a release's diff of it shows what changed in the contract.
  const built = run(["build", MODULE, "--exclude-source-info", "-o", "-#format=json"]);
  if (built.status !== 0) fail(`buf build ${MODULE} failed: ${built.stderr || built.stdout}`);
  const image = JSON.parse(built.stdout);
  mkdirSync(dirname(baseline), { recursive: true });
  writeFileSync(baseline, `${JSON.stringify(image, null, 2)}\n`);
  const files = image.file.filter((f) => !f.bufExtension?.isImport).map((f) => f.name);
  const shown = relative(process.cwd(), baseline);
  console.log(`${shown.startsWith("..") ? baseline : shown} now holds the released contract (${files.join(", ")})`);
  process.exit(0);
}

if (!existsSync(baseline)) fail(`no released baseline at ${baseline}: ${RELEASING}`);
// The module directory is the input (buf 1.75 refuses `--path proto` for a whole module, and the whole
// workspace is two images against the baseline's one); imports (google.protobuf, buf.validate, ...)
// are not part of the contract being checked.
const checked = run(["breaking", MODULE, "--against", baseline, "--exclude-imports", "--error-format", "json"]);
if (checked.status === 0) {
  console.log(`the contract keeps the released baseline (${BASELINE})`);
  process.exit(0);
}
// Exit code 100 is "violations found", one JSON object a line; compile errors come the same way.
const violations = checked.stdout
  .split("\n")
  .filter((line) => line.startsWith("{"))
  .map((line) => JSON.parse(line));
if (checked.status !== 100 || violations.length === 0) {
  fail(`buf breaking failed (exit ${checked.status}): ${checked.stderr || checked.stdout}`);
}
const described = violations.map(
  (v) => `${v.path}:${v.start_line}: ${v.message.replace(/\.$/, "")} (${v.type})`,
);
if (violations.some((v) => v.type === "COMPILE")) fail(`${MODULE}/ does not compile: ${described.join("; ")}`);
fail(
  `the contract breaks the released baseline: ${described.join("; ")}; ` +
    `if this is a deliberate new major version, ${RELEASING}`,
);
