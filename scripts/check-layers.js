// Fails when an import runs up or across the house: every folder of services/
// (and gateway/) sits on a floor, and may import only folders on lower floors
// (and gen/, the contract). ARCHITECTURE.md explains the floors. client/ and web/
// run in browsers: client/ may import only itself, gen/ and the packages that run
// there; web/, the example app, also client/.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

const floors = [
  ["platform", "migrations"],
  ["kernel"],
  ["audit", "policy"],
  ["tokens", "users"],
  ["session"],
  ["auth", "kyc", "clients", "passkeys"],
  ["gateway", "guard", "admin"],
  ["app"],
];
const floorOf = new Map(floors.flatMap((folders, floor) => folders.map((folder) => [folder, floor])));

const files = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith(".ts") ? [path] : [];
  });

/** "services/auth/otp.ts" → "auth", "gateway/server.ts" → "gateway", "gen/…" → "gen". */
function folderOf(path) {
  const parts = relative(".", path).split(sep);
  return parts[0] === "services" ? parts[1] : parts[0];
}

// Static imports and re-exports, side-effect imports (`import "./x.js"`) and dynamic ones (`import("./x.js")`).
const importsOf = (file) =>
  [...readFileSync(file, "utf8").matchAll(/\b(?:(?:import|export)[^'"]*?from\s*|import\s*\(\s*|import\s+)["']([^"']+)["']/g)].map((m) => m[1]);
const browserPackages = ["@connectrpc/connect", "@connectrpc/connect-web", "@bufbuild/protobuf", "@simplewebauthn/browser"];

const browserFolders = { client: { folders: ["client", "gen"], packages: browserPackages }, web: { folders: ["web", "client", "gen"], packages: browserPackages } };

const problems = [];
for (const [from, allowed] of Object.entries(browserFolders)) {
  for (const file of files(from)) {
    for (const target of importsOf(file)) {
      const to = target.startsWith(".") ? folderOf(resolve(dirname(file), target)) : undefined;
      if (to ? allowed.folders.includes(to) : allowed.packages.some((name) => target === name || target.startsWith(`${name}/`))) continue;
      problems.push(`${file} imports ${target}: ${from}/ may import only ${[...allowed.folders.map((f) => `${f}/`), ...allowed.packages].join(", ")}`);
    }
  }
}
for (const file of [...files("services"), ...files("gateway")]) {
  const from = folderOf(file);
  if (!floorOf.has(from)) problems.push(`${file}: folder "${from}" has no floor in scripts/check-layers.js`);
  for (const target of importsOf(file).filter((t) => t.startsWith("."))) {
    const to = folderOf(resolve(dirname(file), target));
    if (to === from || to === "gen") continue;
    if (!(floorOf.get(to) < floorOf.get(from))) {
      problems.push(`${file} imports ${target}: ${from} (floor ${floorOf.get(from)}) may not import ${to} (floor ${floorOf.get(to)})`);
    }
  }
}
if (problems.length > 0) {
  console.error(`imports that run up or across the floors:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`imports point down (${floors.map((f) => f.join("+")).join(" < ")})`);
