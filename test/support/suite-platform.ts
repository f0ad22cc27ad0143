import type { DescService } from "@bufbuild/protobuf";
import pg from "pg";
import type { Running } from "../../services/app/servers.js";
import { grpcClient } from "./clients.js";
import { sharedStores, startPlatform, type SharedStores } from "./platform.js";
import { expectNoSecretLeaked } from "./secrets.js";
import { dropTestDatabases } from "./stores.js";

/** A stand-in provider a platform sends to: its settings go into the platform's environment. */
export interface Inbox {
  env(): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

export interface SuitePlatformOptions {
  /** Settings beyond the fresh stores and the inboxes'. */
  env?: Record<string, string>;
  inboxes?: Inbox[];
  /** Instances sharing the stores (default 1): the first is `running`. */
  instances?: number;
  /** Checked at the end not to have reached a log line or an audit row; tests push what they hand out. */
  secrets?: string[];
}

export type SuitePlatform = ReturnType<typeof platformForSuite>;

/**
 * The platform one describe block tests: started before its tests, on a fresh
 * database, with a Postgres client on it; stopped after them with everything
 * the suite opened through it. Call in the describe block; its fields are set
 * once the suite's first before hook has run.
 */
export function platformForSuite(options: SuitePlatformOptions = {}) {
  const clients: { close(): void }[] = [];
  const platform = {
    stores: undefined as unknown as SharedStores,
    /** The environment the instances started with. */
    env: {} as Record<string, string>,
    running: undefined as unknown as Running,
    instances: [] as Running[],
    db: undefined as unknown as pg.Client,
    logLines: [] as string[],
    /** A stock gRPC client on instance `instance`, closed after the suite. */
    client<S extends DescService>(service: S, instance = 0) {
      const client = grpcClient(service, platform.instances[instance]!.grpcPort!);
      clients.push(client);
      return client;
    },
  };

  before(async () => {
    platform.stores = await sharedStores();
    const inboxEnv = await Promise.all((options.inboxes ?? []).map((inbox) => inbox.env()));
    platform.env = Object.assign({ ...platform.stores }, ...inboxEnv, options.env);
    for (let i = 0; i < (options.instances ?? 1); i++) platform.instances.push(await startPlatform(platform.env, platform.logLines));
    platform.running = platform.instances[0]!;
    platform.db = new pg.Client({ connectionString: platform.stores.DATABASE_URL });
    await platform.db.connect();
  });

  after(async () => {
    if (options.secrets && platform.db) await expectNoSecretLeaked(platform.db, platform.logLines, options.secrets);
    for (const client of clients.splice(0)) client.close();
    await platform.db?.end();
    for (const instance of platform.instances.splice(0)) await instance.stop();
    for (const inbox of options.inboxes ?? []) await inbox.stop();
    await dropTestDatabases();
  });

  return platform;
}
