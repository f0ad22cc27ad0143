import { expect } from "chai";
import type pg from "pg";

/** Asserts that none of the codes, tokens and passwords a test handed out reached a log line or an audit row. */
export async function expectNoSecretLeaked(db: pg.Client, logLines: string[], secrets: string[]): Promise<void> {
  const audit = JSON.stringify((await db.query("select * from audit_event")).rows);
  const logs = logLines.join("");
  for (const secret of secrets) {
    expect(logs, "log lines").not.to.contain(secret);
    expect(audit, "audit rows").not.to.contain(secret);
  }
}
