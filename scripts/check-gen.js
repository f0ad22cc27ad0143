// Fails when gen/ is not exactly what `buf generate` makes from proto/: the
// generated code is committed, so a stale copy would ship an old contract.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const out = mkdtempSync(join(tmpdir(), "portcullis-gen-"));
try {
  execFileSync("node_modules/.bin/buf", ["generate", "-o", out], { stdio: "inherit" });
  const files = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? files(path) : [path];
    });
  const expected = new Map(files(join(out, "gen")).map((f) => [relative(join(out, "gen"), f), readFileSync(f, "utf8")]));
  const actual = new Map(files("gen").map((f) => [relative("gen", f), readFileSync(f, "utf8")]));
  const stale = [...new Set([...expected.keys(), ...actual.keys()])].filter((f) => expected.get(f) !== actual.get(f));
  if (stale.length > 0) {
    console.error(`gen/ is stale (run npm run generate and commit): ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log(`gen/ is fresh (${actual.size} files)`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
