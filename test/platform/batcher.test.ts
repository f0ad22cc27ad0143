import { expect } from "chai";
import { Batcher } from "../../services/platform/batcher.js";

/** Records each batch it is given and answers every input doubled, as a statement would one row per input. */
function recording(fail?: (inputs: number[]) => Error | undefined) {
  const batches: number[][] = [];
  const batcher = new Batcher<number, number>(
    async (inputs) => {
      batches.push(inputs);
      const error = fail?.(inputs);
      if (error) throw error;
      return inputs.map((input) => input * 2);
    },
    { name: "test", key: (input) => String(input % 100), maxBatch: 3 },
  );
  return { batcher, batches };
}

describe("Batching the calls of one event-loop turn", () => {
  it("runs the calls made in one turn together and answers each with its own output", async () => {
    const { batcher, batches } = recording();
    const outputs = await Promise.all([1, 2, 3].map((input) => batcher.add(input)));
    expect(outputs).to.deep.equal([2, 4, 6]);
    expect(batches).to.deep.equal([[1, 2, 3]]);
  });

  it("splits a turn's calls into batches of at most maxBatch", async () => {
    const { batcher, batches } = recording();
    await Promise.all([1, 2, 3, 4, 5].map((input) => batcher.add(input)));
    expect(batches).to.deep.equal([[1, 2, 3], [4, 5]]);
  });

  it("runs a call whose key is already in the turn only after that batch has settled", async () => {
    const { batcher, batches } = recording();
    const outputs = await Promise.all([1, 101, 2].map((input) => batcher.add(input)));
    expect(outputs).to.deep.equal([2, 202, 4]);
    expect(batches).to.deep.equal([[1, 2], [101]]);
  });

  it("puts a repeat ahead of a later call on its key that is still waiting", async () => {
    const batches: number[][] = [];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const batcher = new Batcher<number, number>(
      async (inputs) => {
        batches.push(inputs);
        if (inputs.includes(1)) await gate;
        return inputs;
      },
      { name: "test", key: (input) => String(input % 100), maxBatch: 3 },
    );
    const first = [1, 101].map((input) => batcher.add(input));
    await new Promise((resolve) => setImmediate(resolve));
    // 201 waits for the next turn; 101 waits for 1's batch, which settles first.
    const later = batcher.add(201);
    open();
    await Promise.all([...first, later]);
    expect(batches).to.deep.equal([[1], [101], [201]]);
  });

  it("hands a batch over in key order, so batches sharing rows lock them alike", async () => {
    const { batcher, batches } = recording();
    expect(await Promise.all([3, 1, 2].map((input) => batcher.add(input)))).to.deep.equal([6, 2, 4]);
    expect(batches).to.deep.equal([[1, 2, 3]]);
  });

  it("runs a deadlocked batch again one call at a time", async () => {
    let deadlocks = 0;
    const { batcher, batches } = recording((inputs) =>
      inputs.length > 1 && deadlocks++ === 0 ? Object.assign(new Error("deadlock detected"), { code: "40P01" }) : undefined,
    );
    expect(await Promise.all([1, 2].map((input) => batcher.add(input)))).to.deep.equal([2, 4]);
    expect(batches).to.deep.equal([[1, 2], [1], [2]]);
  });

  it("runs a lone call that lost a deadlock once more", async () => {
    let deadlocks = 0;
    const { batcher, batches } = recording(() => (deadlocks++ === 0 ? Object.assign(new Error("deadlock detected"), { code: "40P01" }) : undefined));
    expect(await batcher.add(7)).to.equal(14);
    expect(batches).to.deep.equal([[7], [7]]);
  });

  it("gives every call of a failed batch its error", async () => {
    const { batcher } = recording(() => new Error("database unreachable"));
    const results = await Promise.allSettled([1, 2].map((input) => batcher.add(input)));
    expect(results.map((r) => r.status === "rejected" && (r.reason as Error).message)).to.deep.equal(["database unreachable", "database unreachable"]);
  });
});
