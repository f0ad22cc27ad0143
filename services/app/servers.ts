import type { IncomingMessage, Server as HttpServer, ServerResponse } from "node:http";
import { Server as NetServer, type AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { createGateway } from "../../gateway/server.js";
import { forwardingDispatch } from "../../gateway/forward.js";
import { webAppFiles } from "../../gateway/web-app.js";
import { closeAll, createApp, services, type App } from "./app.js";
import type { Config } from "../platform/config.js";
import { createGrpcServer } from "../platform/grpc-server.js";
import { createMetricsServer } from "../platform/metrics-server.js";
import type { Logger } from "../platform/logger.js";
import { startTracing } from "../platform/tracing.js";

const readinessIntervalMs = 2000;
/** Time for what is already on its way when the gateway drains (a connection, or a request on an idle one) to reach it. */
const drainSettleMs = 500;

export interface Running {
  app?: App;
  grpcPort?: number;
  httpPort?: number;
  metricsPort?: number;
  stop(): Promise<void>;
}

/**
 * Starts what MODE asks for: both doors in one process (`all`, the gateway
 * calling the handlers in-process), the gRPC server alone (`grpc`), or the
 * gateway alone forwarding to GATEWAY_UPSTREAM (`gateway`).
 */
export async function startServers(config: Config, logger: Logger): Promise<Running> {
  // First to start and last to stop: spans of the start-up and of the calls drained at shutdown are exported too.
  const stopTracing = startTracing(config.tracing, logger);
  const app = config.mode === "gateway"
    ? undefined
    : await createApp(config, logger).catch(async (error: unknown) => {
        await stopTracing();
        throw error;
      });
  const stops: (() => Promise<void>)[] = [stopTracing];
  const running: Running = { app, stop: () => closeAll(stops) };
  try {
    if (app) stops.push(() => app.close());

    if (config.metricsPort !== 0) {
      const metrics = createMetricsServer();
      running.metricsPort = await listenHttp(metrics, config.host, config.metricsPort);
      stops.push(() => closeMetrics(metrics));
      logger.info({ port: running.metricsPort, host: config.host }, "metrics listening");
    }

    if (app) {
      const { server, health } = createGrpcServer({ services, dispatch: app.dispatch, maxRequestBytes: config.maxRequestBytes });
      running.grpcPort = await bindGrpc(server, config.host, config.grpcPort);
      const updateHealth = async () => {
        const status = (await app.ready()) ? "SERVING" : "NOT_SERVING";
        health.setStatus("", status);
        for (const service of services) health.setStatus(service.typeName, status);
      };
      await updateHealth();
      // A check still waiting (a database that does not answer) is not joined by another each interval.
      let checking = false;
      const timer = setInterval(() => {
        if (checking) return;
        checking = true;
        void updateHealth().finally(() => (checking = false));
      }, readinessIntervalMs);
      stops.push(() => shutdownGrpc(server, timer, config.shutdownGraceSeconds));
      logger.info({ port: running.grpcPort, host: config.host }, "gRPC server listening");
    }

    if (config.mode !== "grpc") {
      const { dispatch, ready } = app
        ? { dispatch: app.dispatch, ready: () => app.ready() }
        : forwardingDispatch(config.gatewayUpstream, config.gatewayUpstreamTimeoutMs, services);
      const gateway = createGateway({
        services,
        dispatch,
        ready,
        corsOrigins: config.corsOrigins,
        maxRequestBytes: config.maxRequestBytes,
        timeouts: config.gateway,
        oauth: { issuer: config.jwt.issuer, publicUrl: config.publicUrl, audience: config.jwt.audience },
        webApp: config.webApp ? await webAppFiles() : undefined,
        logger,
      });
      running.httpPort = await listenHttp(gateway, config.host, config.httpPort);
      stops.push(() => closeHttp(gateway, config.shutdownGraceSeconds));
      logger.info({ port: running.httpPort, host: config.host, upstream: app ? "in-process" : config.gatewayUpstream }, "gateway listening");
      if (config.webApp) logWebApp(config, running.httpPort, logger);
    }
    return running;
  } catch (error) {
    await running.stop().catch(() => {});
    throw error;
  }
}

/** Browsers bind passkeys to the page's origin: a page at another one than WEBAUTHN_ORIGINS cannot use them. */
function logWebApp(config: Config, port: number, logger: Logger): void {
  const origin = `http://localhost:${port}`;
  const passkeys = config.webauthn.origins.includes(origin) ? "" : `; passkeys need APP_URL (or WEBAUTHN_ORIGINS) set to ${origin}`;
  logger.info({ url: `${origin}/` }, `web app at ${origin}/${passkeys}`);
}

function bindGrpc(server: grpc.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound)));
  });
}

function shutdownGrpc(server: grpc.Server, timer: NodeJS.Timeout, graceSeconds: number): Promise<void> {
  clearInterval(timer);
  return new Promise((resolve) => {
    const force = setTimeout(() => server.forceShutdown(), graceSeconds * 1000);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}

function listenHttp(server: HttpServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

/** A scrape cut short is only a gap in a graph: Prometheus scrapes again. */
function closeMetrics(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/**
 * Drains the gateway so that every request that reached us is answered (each with `Connection: close`).
 * Closing the listener resets the connections the kernel has completed but we have not accepted yet, so it
 * closes after a settle; `http.Server#close` would also close at once the connections idle at that moment,
 * among them those whose request is still on its way, so only the listener closes then (`net.Server#close`)
 * and the connections still idle after another settle. Whatever is left at the grace is cut.
 */
function closeHttp(server: HttpServer, graceSeconds: number): Promise<void> {
  server.prependListener("request", (_request: IncomingMessage, response: ServerResponse) => response.setHeader("Connection", "close"));
  const graceMs = graceSeconds * 1000;
  return new Promise((resolve) => {
    const steps = [
      setTimeout(() => NetServer.prototype.close.call(server), Math.min(drainSettleMs, graceMs)),
      setTimeout(() => server.closeIdleConnections(), Math.min(2 * drainSettleMs, graceMs)),
      setTimeout(() => server.closeAllConnections(), graceMs),
    ];
    server.once("close", () => {
      for (const step of steps) clearTimeout(step);
      resolve();
    });
  });
}
