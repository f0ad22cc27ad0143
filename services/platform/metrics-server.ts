import { createServer, type Server } from "node:http";
import { metricsRegistry } from "./metrics.js";

/** Answers Prometheus's scrape, GET /metrics, from the process's registry; nothing else. */
export function createMetricsServer(): Server {
  return createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || path !== "/metrics") {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
      return;
    }
    metricsRegistry.metrics().then(
      (text) => res.writeHead(200, { "Content-Type": metricsRegistry.contentType }).end(text),
      (error: Error) => res.writeHead(500, { "Content-Type": "text/plain" }).end(`${error.message}\n`),
    );
  });
}
