import { connect, type Socket } from "node:net";
import { expect } from "chai";
import { sharedStores, startPlatform, type SharedStores } from "../support/platform.js";
import { dropTestDatabases } from "../support/stores.js";

const healthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const getJwks =
  "POST /portcullis.v1.AuthService/GetJwks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/**
 * What became of one request: `answered` (a whole response, any status), `dropped` (its bytes were
 * written, then the connection closed or reset without an answer), or `not sent` (the connection was
 * refused or already closed, so a client knows to retry elsewhere).
 */
type Outcome = "answered" | "dropped" | "not sent";

/** A raw HTTP/1.1 connection, so the test knows whether a request's bytes left before the server let go. */
class Connection {
  private received = "";
  private closed = false;
  private onChange = () => {};

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.received += chunk;
      this.onChange();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.onChange();
    });
  }

  /** A connection, or undefined when none was established (refused once the listener closed). */
  static open(port: number): Promise<Connection | undefined> {
    return new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => resolve(new Connection(socket)));
      socket.once("error", () => resolve(undefined));
    });
  }

  async exchange(request: string): Promise<Outcome> {
    if (this.closed || this.socket.readableEnded) return "not sent";
    this.received = "";
    const written = await new Promise<boolean>((resolve) => this.socket.write(request, (error) => resolve(!error)));
    if (!written) return "not sent";
    return new Promise((resolve) => {
      this.onChange = () => {
        if (responseComplete(this.received)) resolve("answered");
        else if (this.closed) resolve("dropped");
      };
      this.onChange();
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

function responseComplete(received: string): boolean {
  const headerEnd = received.indexOf("\r\n\r\n");
  if (!received.startsWith("HTTP/1.1 ") || headerEnd < 0) return false;
  const headers = received.slice(0, headerEnd);
  if (/\r\ntransfer-encoding: *chunked/i.test(headers)) return received.endsWith("\r\n0\r\n\r\n");
  const length = /\r\ncontent-length: *(\d+)/i.exec(headers)?.[1];
  return length !== undefined && received.length >= headerEnd + 4 + Number(length);
}

describe("Draining the gateway on stop", function () {
  this.timeout(120_000);
  let stores: SharedStores;

  before(async () => {
    stores = await sharedStores();
  });
  after(async () => {
    await dropTestDatabases();
  });

  it("answers every request whose bytes reached it around the stop, on fresh and keep-alive connections", async () => {
    const dropped: string[] = [];
    for (let round = 0; round < 4; round++) {
      const platform = await startPlatform({ ...stores, SHUTDOWN_GRACE_SECONDS: "5" });
      const port = platform.httpPort!;
      const keptAlive = await Promise.all(
        Array.from({ length: 8 }, async () => {
          const connection = (await Connection.open(port))!;
          expect(await connection.exchange(healthz)).to.equal("answered");
          return connection;
        }),
      );
      const fresh: Connection[] = [];
      const sendFresh = (request: string) =>
        Connection.open(port).then((connection) => {
          if (!connection) return "not sent" as const;
          fresh.push(connection);
          return connection.exchange(request);
        });
      const requests = [healthz, getJwks];

      // Requests on their way in every state as the stop lands (0 to 2 ms later): connecting, written to a fresh
      // connection, written to an idle keep-alive connection; and just after it, new connections and requests on
      // idle ones.
      const before = [
        ...requests.flatMap((request) => [sendFresh(request), sendFresh(request)]),
        ...keptAlive.slice(0, 4).map((connection, i) => connection.exchange(requests[i % 2])),
      ];
      const delayMs = round % 3;
      const stopped = new Promise<void>((resolve, reject) => setTimeout(() => platform.stop().then(resolve, reject), delayMs));
      const after = await new Promise<Promise<Outcome>[]>((resolve) =>
        setTimeout(
          () =>
            resolve([
              ...requests.map((request) => sendFresh(request)),
              ...keptAlive.slice(4).map((connection, i) => connection.exchange(requests[i % 2])),
            ]),
          delayMs,
        ),
      );
      const outcomes = await Promise.all([...before, ...after]);
      await stopped;
      expect(await Connection.open(port), "accepting after the drain").to.equal(undefined);
      for (const connection of [...keptAlive, ...fresh]) connection.close();
      outcomes.forEach((outcome, i) => outcome === "dropped" && dropped.push(`round ${round}, request ${i}`));
    }
    expect(dropped, "requests written, then closed without an answer").to.deep.equal([]);
  });
});
