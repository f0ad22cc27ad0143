import type { IncomingMessage, ServerResponse } from "node:http";
import { cors as connectCors } from "@connectrpc/connect";

const allowMethods = connectCors.allowedMethods.join(", ");
const allowHeaders = [...connectCors.allowedHeaders, "Authorization", "X-Request-Id", "X-Captcha-Token"].join(", ");
const exposeHeaders = [...connectCors.exposedHeaders, "X-Request-Id", "Retry-After"].join(", ");

/**
 * CORS for the configured origins only. A request from any other origin gets
 * no CORS headers at all, so the browser keeps the response from the page.
 * Returns true when the request was a preflight and has been answered.
 */
export function applyCors(allowedOrigins: ReadonlySet<string>, req: IncomingMessage, res: ServerResponse): boolean {
  const origin = req.headers.origin;
  const allowed = origin !== undefined && allowedOrigins.has(origin);
  res.setHeader("Vary", "Origin");
  const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
  if (allowed) {
    res.setHeader("Access-Control-Allow-Origin", origin);
    if (preflight) {
      res.setHeader("Access-Control-Allow-Methods", allowMethods);
      res.setHeader("Access-Control-Allow-Headers", allowHeaders);
      res.setHeader("Access-Control-Max-Age", "7200");
    } else {
      res.setHeader("Access-Control-Expose-Headers", exposeHeaders);
    }
  }
  if (preflight) {
    res.writeHead(204).end();
    return true;
  }
  return false;
}
