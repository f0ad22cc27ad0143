import type { DescMethod } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { Running } from "../../services/app/servers.js";
import { createGrpcServer, createGuard, type GuardOptions, type UnaryHandler } from "../../services/guard/guard.js";
import { createLogger } from "../../services/platform/logger.js";
import type { SharedStores } from "./platform.js";

export interface GuardedService {
  port: number;
  close(): Promise<void>;
}

/**
 * A downstream gRPC service behind the Portcullis guard, as another team
 * would run one: it trusts `portcullis`'s JWKS and the feed in its stores,
 * counts its own limits under `downstream:`, and serves `handlers` (the
 * services are those the handlers' methods belong to). `options` adds to or
 * overrides those settings.
 */
export async function serveBehindGuard(
  portcullis: Running,
  stores: SharedStores,
  handlers: Map<DescMethod, UnaryHandler>,
  options: Partial<GuardOptions> & { name: string },
): Promise<GuardedService> {
  const services = [...new Set([...handlers.keys()].map((method) => method.parent))];
  const guard = await createGuard({
    services,
    jwksUrl: `http://127.0.0.1:${portcullis.httpPort}/.well-known/jwks.json`,
    redisUrl: stores.REDIS_URL,
    portcullisKeyPrefix: stores.REDIS_KEY_PREFIX,
    limitKeyPrefix: `${stores.REDIS_KEY_PREFIX}downstream:`,
    logger: createLogger("silent"),
    ...options,
  });
  const { server } = createGrpcServer({ services, dispatch: guard.dispatch(handlers), maxRequestBytes: 65536 });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return {
    port,
    async close() {
      server.forceShutdown();
      await guard.close();
    },
  };
}
