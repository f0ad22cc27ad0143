import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import { metricsRegistry } from "../../services/platform/metrics.js";

const run = promisify(execFile);
const rulesFile = "ops/prometheus/alerts.yml";
const rulesTestFile = "ops/prometheus/alerts.test.yml";
const dashboardFile = "ops/grafana/portcullis.json";

/** Fails with promtool's own words; a machine without promtool fails too, since CI installs it. */
async function promtool(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run("promtool", args, { timeout: 20_000 });
    return stdout + stderr;
  } catch (error) {
    const failed = error as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (failed.code === "ENOENT") {
      throw new Error("promtool is not installed: it comes with Debian's prometheus package (apt-get install prometheus), which .ci/run installs");
    }
    throw new Error(`promtool ${args.join(" ")} failed:\n${failed.stdout ?? ""}${failed.stderr ?? failed.message}`);
  }
}

/** The `expr` of each rule: one line, or a `|` block of the lines indented below it. */
function ruleExpressions(yaml: string): string[] {
  const lines = yaml.split("\n");
  const exprs: string[] = [];
  lines.forEach((line, i) => {
    const match = /^(\s*)expr:\s*(.*)$/.exec(line);
    if (!match) return;
    if (match[2] !== "|") return void exprs.push(match[2]!);
    const block: string[] = [];
    for (let j = i + 1; j < lines.length && (lines[j]!.trim() === "" || lines[j]!.search(/\S/) > match[1]!.length); j++) block.push(lines[j]!);
    exprs.push(block.join("\n"));
  });
  return exprs;
}

const notMetrics = new Set(["and", "or", "unless", "offset", "bool", "inf", "nan"]);

/** Metric names in a PromQL expression: the identifiers left once strings, matchers, ranges, groupings and calls are set aside. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}|\[[^\]]*\]/g, " ")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = [...bare.matchAll(/(?<![\w.$:])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()/g)].map((m) => m[0]);
  return names.filter((name) => !notMetrics.has(name));
}

/** Every value a `code` matcher names, split at the alternatives of a regular expression. */
function codeValues(expr: string): string[] {
  return [...expr.matchAll(/\bcode\s*(?:=~|!~|!=|=)\s*"([^"]*)"/g)].flatMap((m) => m[1]!.split("|"));
}

async function exportedNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const metric of await metricsRegistry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (String(metric.type) === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(metric.name + suffix);
  }
  return names;
}

function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(dashboardFile, "utf8")) as { panels: { targets?: { expr: string }[] }[] };
  return dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr));
}

describe("Dashboard and alerts (ops/)", () => {
  it("the alert rules pass promtool's check and its unit tests", async function () {
    this.timeout(60_000);
    expect(await promtool("check", "rules", rulesFile)).to.match(/SUCCESS/);
    expect(await promtool("test", "rules", rulesTestFile)).to.match(/SUCCESS/);
  });

  it("the alerts and the dashboard use only series Portcullis exports", async () => {
    const exported = await exportedNames();
    // `up` is Prometheus's own series about the scrape.
    exported.add("up");
    const rules = readFileSync(rulesFile, "utf8");
    const alertExprs = ruleExpressions(rules);
    expect(alertExprs).to.have.length((rules.match(/^\s*- alert:/gm) ?? []).length);
    for (const expr of [...alertExprs, ...dashboardExpressions()]) {
      const names = metricNames(expr);
      expect(names, expr).to.not.be.empty;
      for (const name of names) expect(exported, `${name} in: ${expr}`).to.include(name);
    }
  });

  it("the code label is matched by the names the chain gives it", () => {
    const codeNames = new Set(["ok", ...Object.keys(Code).filter((key) => Number.isNaN(Number(key)))]);
    const exprs = [...ruleExpressions(readFileSync(rulesFile, "utf8")), ...dashboardExpressions()];
    const values = exprs.flatMap(codeValues);
    expect(values).to.include("Unavailable");
    for (const value of values) expect(codeNames, value).to.include(value);
  });

  it("every alert's runbook is a section of the README", () => {
    const slugs = new Set(
      [...readFileSync("README.md", "utf8").matchAll(/^#+ (.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-")),
    );
    const rules = readFileSync(rulesFile, "utf8");
    const alerts = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]!);
    const runbooks = [...rules.matchAll(/^\s*runbook: "README\.md#([\w-]+)"$/gm)].map((m) => m[1]!);
    expect(runbooks, "one runbook per alert, named after it").to.deep.equal(alerts.map((alert) => alert.toLowerCase()));
    for (const anchor of runbooks) expect(slugs, anchor).to.include(anchor);
  });

  it("the dashboard asks which Prometheus to read instead of naming one", () => {
    const datasources: unknown[] = [];
    JSON.parse(readFileSync(dashboardFile, "utf8"), (key, value: unknown) => {
      if (key === "datasource") datasources.push(value);
      return value;
    });
    expect(datasources).to.not.be.empty;
    for (const datasource of datasources) expect(datasource).to.deep.equal({ type: "prometheus", uid: "${DS_PROMETHEUS}" });
  });
});
