import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import type { Running } from "../../services/app/servers.js";
import { sharedStores, startPlatform } from "../support/platform.js";
import { dropTestDatabases } from "../support/stores.js";

/** What the server sent before it closed the socket, or undefined if it still holds it open after `boundMs`. */
async function closedByServer(socket: Socket, boundMs: number): Promise<string | undefined> {
  let received = "";
  socket.on("data", (chunk) => (received += String(chunk)));
  const closed = new Promise<string>((resolve) => socket.once("close", () => resolve(received)));
  const gaveUp = new AbortController();
  try {
    return await Promise.race([closed, sleep(boundMs, undefined, { signal: gaveUp.signal })]);
  } finally {
    gaveUp.abort();
    socket.destroy();
  }
}

describe("The gateway and slow clients", () => {
  let platform: Running;

  before(async () => {
    platform = await startPlatform({ ...(await sharedStores()), GATEWAY_HEADERS_TIMEOUT_MS: "1000", GATEWAY_REQUEST_TIMEOUT_MS: "2000" });
  });
  after(async () => {
    await platform?.stop();
    await dropTestDatabases();
  });

  it("closes connections that never finish their headers, and still serves others", async () => {
    const sockets = await Promise.all(
      [1, 2, 3].map(
        () =>
          new Promise<Socket>((resolve, reject) => {
            const socket = connect(platform.httpPort!, "127.0.0.1", () => {
              socket.write("GET /healthz HT");
              resolve(socket);
            });
            socket.once("error", reject);
          }),
      ),
    );
    // Far beyond the 1 s configured, far short of Node's own 60 s (swept every 30 s).
    const outcomes = await Promise.all(sockets.map((socket) => closedByServer(socket, 10_000)));
    for (const sent of outcomes) {
      expect(sent, "closed by the server").to.be.a("string");
      expect(sent).to.match(/^HTTP\/1\.1 408/);
    }

    const response = await fetch(`http://127.0.0.1:${platform.httpPort}/healthz`);
    expect(response.status).to.equal(200);
  });
});
