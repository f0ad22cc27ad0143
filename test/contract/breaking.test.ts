import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

// scripts/check-breaking.js, run on copies of the contract (proto/, third_party/proto, buf.yaml and the
// released baseline) in a temporary directory, each changed the way a test needs.
const repo = fileURLToPath(new URL("../..", import.meta.url));
const script = join(repo, "scripts", "check-breaking.js");
const baseline = join("proto-baseline", "portcullis-v1.json");
const authService = join("proto", "portcullis", "v1", "auth_service.proto");

describe("Contract evolution (buf breaking against the released baseline)", () => {
  let root: string;
  let copies = 0;

  before(() => {
    root = mkdtempSync(join(tmpdir(), "portcullis-contract-"));
  });

  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  function copyContract(): string {
    const dir = join(root, `copy-${++copies}`);
    for (const path of ["proto", join("third_party", "proto"), "buf.yaml", "proto-baseline"]) {
      cpSync(join(repo, path), join(dir, path), { recursive: true });
    }
    return dir;
  }

  function edit(dir: string, path: string, change: (text: string) => string): void {
    const before = readFileSync(join(dir, path), "utf8");
    const after = change(before);
    expect(after, `the edit of ${path} applies`).to.not.equal(before);
    writeFileSync(join(dir, path), after);
  }

  function check(dir: string, ...args: string[]) {
    const run = spawnSync(process.execPath, [script, "--workspace", dir, ...args], { encoding: "utf8" });
    return { status: run.status, stdout: run.stdout, stderr: run.stderr };
  }

  it("passes on an unchanged copy of the contract", () => {
    const result = check(copyContract());
    expect(result.stderr).to.equal("");
    expect(result.status).to.equal(0);
  });

  it("fails on a renumbered field, naming it and saying how a deliberate break is released", () => {
    const dir = copyContract();
    edit(dir, authService, (text) => text.replace(/(message SendOtpRequest \{[\s\S]*?\bphone_number = )1\b/, "$19"));
    const result = check(dir);
    expect(result.status).to.equal(1);
    expect(result.stderr.trimEnd().split("\n"), "one line").to.have.length(1);
    expect(result.stderr).to.match(/^the contract breaks the released baseline: proto\/portcullis\/v1\/auth_service\.proto:\d+: /);
    expect(result.stderr).to.include('Previously present field "1" with name "phone_number" on message "SendOtpRequest" was deleted');
    expect(result.stderr).to.include("if this is a deliberate new major version, see README 'Releasing the contract'");
  });

  it("fails on a renamed RPC", () => {
    const dir = copyContract();
    edit(dir, authService, (text) => text.replace(/\brpc SendOtp\(/, "rpc SendCode("));
    const result = check(dir);
    expect(result.status).to.equal(1);
    expect(result.stderr).to.include('Previously present RPC "SendOtp" on service "AuthService" was deleted');
  });

  it("accepts additions: an import of a vendored proto, a field option from it and a new field", () => {
    // A stand-in for buf/validate/validate.proto: a third-party file extending FieldOptions.
    const dir = copyContract();
    mkdirSync(join(dir, "third_party", "proto", "contracttest"), { recursive: true });
    writeFileSync(
      join(dir, "third_party", "proto", "contracttest", "rules.proto"),
      [
        'syntax = "proto3";',
        "package contracttest;",
        'import "google/protobuf/descriptor.proto";',
        "message StringRules { uint32 min_len = 1; }",
        "extend google.protobuf.FieldOptions { StringRules rules = 51234; }",
        "",
      ].join("\n"),
    );
    edit(dir, authService, (text) =>
      text
        .replace(/^package portcullis\.v1;$/m, '$&\n\nimport "contracttest/rules.proto";')
        .replace(/(message SendOtpRequest \{[\s\S]*?\bphone_number = 1)( \[)?/, (_, field: string, options?: string) =>
          options ? `${field} [(contracttest.rules).min_len = 1, ` : `${field} [(contracttest.rules).min_len = 1]`,
        )
        .replace(/^message SendOtpRequest \{$/m, "$&\n  string contract_test_note = 9999;"),
    );
    const result = check(dir);
    expect(result.stderr).to.equal("");
    expect(result.status).to.equal(0);
  });

  it("--update makes the working contract the released baseline of that copy only", () => {
    const dir = copyContract();
    const released = readFileSync(join(repo, baseline), "utf8");
    edit(dir, authService, (text) => text.replace(/\brpc SendOtp\(/, "rpc SendCode("));
    expect(check(dir).status).to.equal(1);
    expect(check(dir, "--update").status).to.equal(0);
    expect(readFileSync(join(dir, baseline), "utf8")).to.include('"name": "SendCode"').and.not.include('"name": "SendOtp"');
    expect(check(dir).status).to.equal(0);
    expect(readFileSync(join(repo, baseline), "utf8"), "the repository's baseline is untouched").to.equal(released);
  });
});
