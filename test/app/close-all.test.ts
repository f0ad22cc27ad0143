import { expect } from "chai";
import { closeAll } from "../../services/app/app.js";

describe("Closing what was opened", () => {
  it("closes last opened first, each time, and closes the rest when one fails, then throws its error", async () => {
    const closed: string[] = [];
    const closers = ["database", "feed", "cleanup"].map((name) => () => {
      closed.push(name);
      if (name === "feed") throw new Error("feed stuck");
    });
    for (let round = 0; round < 2; round++) {
      closed.length = 0;
      const failure = await closeAll(closers).then(() => undefined, (error: Error) => error);
      expect(failure?.message).to.equal("feed stuck");
      expect(closed).to.deep.equal(["cleanup", "feed", "database"]);
    }
  });
});
