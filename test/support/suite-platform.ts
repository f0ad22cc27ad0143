import type { DescService } from "@bufbuild/protobuf";
import pg from "pg";
import type { Running } from "../../services/app/servers.js";
import { grpcClient, type GrpcClient } from "./clients.js";
import { sharedStores, startPlatform, type SharedStores } from "./platform.js";
import { expectNoSecretLeaked } from "./secrets.js";
import { dropTestDatabases } from "./stores.js";

/** A stand-in provider a platform sends to: its settings go into the platform's environment. */
interface Inbox {
  env(): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

interface SuitePlatformOptions {
  /** Settings beyond the fresh stores and the inboxes'. */
  env?: Record<string, string>;
  inboxes?: Inbox[];
  /** Instances sharing the stores (default 1): the first is `running`. */
  instances?: number;
  /** Checked at the end not to have reached a log line or an audit row; tests push what they hand out. Implies `logs`. */
  secrets?: string[];
  /** Keep the instances' log lines (at info) in `logLines`; otherwise they log nothing. */
  logs?: boolean;
}

/**
 * The platform one describe block tests: started before its tests, on a fresh
 * database, with a Postgres client on it; stopped after them with everything
 * the suite opened through it. Call it in the describe block before any hook
 * of the suite's own that uses it: its fields are set by the before hook it
 * registers. Not for nested suites: its teardown drops every test database.
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
    /**
     * A stock gRPC client on instance `instance`, closed after the suite. It
     * may be made where the suite is declared: it connects at its first call,
     * once the instance is up.
     */
    client<S extends DescService>(service: S, instance = 0): GrpcClient<S> {
      let made: GrpcClient<S> | undefined;
      const connected = () => {
        if (!made) clients.push((made = grpcClient(service, platform.instances[instance]!.grpcPort!)));
        return made;
      };
      return {
        get raw() {
          return connected().raw;
        },
        call: (...args) => connected().call(...args),
        callRaw: (...args) => connected().callRaw(...args),
        close: () => made?.close(),
      };
    },
  };

  before(async function () {
    // Fresh migrations on every instance, on a machine busy with the other suites.
    this.timeout(90_000);
    platform.stores = await sharedStores();
    const inboxEnv = await Promise.all((options.inboxes ?? []).map((inbox) => inbox.env()));
    platform.env = Object.assign({ ...platform.stores }, ...inboxEnv, options.env);
    const logLines = options.logs || options.secrets ? platform.logLines : undefined;
    for (let i = 0; i < (options.instances ?? 1); i++) platform.instances.push(await startPlatform(platform.env, logLines));
    platform.running = platform.instances[0]!;
    platform.db = new pg.Client({ connectionString: platform.stores.DATABASE_URL });
    await platform.db.connect();
  });

  after(async () => {
    try {
      if (options.secrets && platform.db) {
        // Notices and refusals write their audit rows after the answer: the check must see those too.
        for (const instance of platform.instances) await instance.app?.settled();
        await expectNoSecretLeaked(platform.db, platform.logLines, options.secrets);
      }
    } finally {
      for (const client of clients.splice(0)) client.close();
      await platform.db?.end();
      for (const instance of platform.instances.splice(0)) await instance.stop();
      for (const inbox of options.inboxes ?? []) await inbox.stop();
      await dropTestDatabases();
    }
  });

  return platform;
}
