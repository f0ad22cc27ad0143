import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";

/** One file of the app with every header it is served with (type, ETag, caching and the app's CSP). */
export interface WebAppFile {
  body: Buffer;
  headers: Record<string, string>;
}

/** The sign-in web app by path: `/` (index.html), `/app.js`, `/app.css`. */
export type WebAppFiles = ReadonlyMap<string, WebAppFile>;

/** Paths the app routes itself (links in mails land on them): each is index.html. */
const pagePaths = new Set(["/", "/verify-email", "/reset-password"]);
const apiMeta = '<meta name="portcullis-api" content="">';

let bundle: Promise<{ js: Buffer; css: Buffer; html: string }> | undefined;

/**
 * Builds the app (web/main.ts bundled by esbuild, its page and styles) for an API at `apiBaseUrl`, or at the
 * serving origin when it is empty. The bundle is made once per process: only the page differs by API.
 */
export async function webAppFiles(options: { apiBaseUrl?: string } = {}): Promise<WebAppFiles> {
  const apiBaseUrl = options.apiBaseUrl ?? "";
  const apiOrigin = apiBaseUrl === "" ? undefined : new URL(apiBaseUrl).origin;
  bundle ??= build().catch((error: unknown) => {
    bundle = undefined;
    throw error;
  });
  const { js, css, html } = await bundle;
  const page = Buffer.from(html.replace(apiMeta, `<meta name="portcullis-api" content="${escapeAttribute(apiBaseUrl)}">`));
  const contentSecurityPolicy = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    `connect-src 'self'${apiOrigin ? ` ${apiOrigin}` : ""}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  const file = (body: Buffer, contentType: string): WebAppFile => ({
    body,
    headers: {
      "Content-Type": contentType,
      "Content-Security-Policy": contentSecurityPolicy,
      "Cache-Control": "no-cache",
      ETag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
    },
  });
  return new Map([
    ["/", file(page, "text/html; charset=utf-8")],
    ["/app.js", file(js, "text/javascript; charset=utf-8")],
    ["/app.css", file(css, "text/css; charset=utf-8")],
  ]);
}

/** Answers GET and HEAD for the app's paths and returns true; returns false, touching nothing, for any other request. */
export function serveWebApp(files: WebAppFiles, req: IncomingMessage, res: ServerResponse, path: string): boolean {
  if (req.method !== "GET" && req.method !== "HEAD") return false;
  const served = files.get(pagePaths.has(path) ? "/" : path);
  if (!served) return false;
  const { ETag: etag, ...headers } = served.headers;
  res.setHeader("ETag", etag!);
  if (req.headers["if-none-match"]?.split(/\s*,\s*/).includes(etag!)) {
    // A browser replaces the cached response's headers with a 304's: without the app's CSP it would keep the gateway's.
    res.writeHead(304, { "Cache-Control": headers["Cache-Control"], "Content-Security-Policy": headers["Content-Security-Policy"] }).end();
    return true;
  }
  res.writeHead(200, { ...headers, "Content-Length": served.body.byteLength });
  res.end(req.method === "HEAD" ? undefined : served.body);
  return true;
}

async function build() {
  const web = webFolder();
  // Loaded only here, so a gateway that does not serve the app never loads esbuild.
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    entryPoints: [`${web}/main.ts`],
    bundle: true,
    write: false,
    format: "esm",
    minify: true,
    target: "es2022",
    platform: "browser",
    logLevel: "silent",
  });
  const styles = await esbuild.transform(await readFile(`${web}/styles.css`, "utf8"), { loader: "css", minify: true });
  const html = await readFile(`${web}/index.html`, "utf8");
  if (!html.includes(apiMeta)) throw new Error(`web/index.html lacks ${apiMeta}`);
  return { js: Buffer.from(result.outputFiles[0]!.contents), css: Buffer.from(styles.code), html };
}

/** `npm start` runs this file from gateway/, `start:prod` from dist/gateway/: the sources stay at the root. */
function webFolder(): string {
  const candidates = ["../web", "../../web"].map((relative) => fileURLToPath(new URL(relative, import.meta.url)));
  const found = candidates.find((folder) => existsSync(`${folder}/main.ts`));
  if (!found) throw new Error(`the web app's sources are not in ${candidates.join(" or ")}`);
  return found;
}

function escapeAttribute(value: string): string {
  return value.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
