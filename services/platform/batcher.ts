import { batchSizes } from "./metrics.js";

interface Pending<In, Out> {
  input: In;
  resolve(output: Out): void;
  reject(error: unknown): void;
}

export interface BatcherOptions<In> {
  /** The batch's label on the batch-size histogram: one of the few listed there. */
  name: string;
  /**
   * The row an input locks. Inputs with equal keys never run together: a
   * repeat waits until the batches running with the first have settled, so it
   * sees what the first changed, as it would have after waiting for the
   * first's row lock. A batch is in key order, so batches sharing rows mostly
   * lock them alike.
   */
  key(input: In): string;
  maxBatch: number;
}

const deadlockDetected = "40P01";

/**
 * Runs every call made in one turn of the event loop as one batch: under load
 * a statement's fixed cost (the round trip, Postgres's executor start, the
 * commit) is paid once for many calls; an idle server runs batches of one.
 * `run` gets a batch's inputs, ordered by key, and answers one output per
 * input, in that order.
 * Postgres may lock a batch's rows in an order of its own choosing, so two
 * batches can deadlock; such a batch is run again one input at a time (and a
 * lone input once more).
 */
export class Batcher<In, Out> {
  private pending: Pending<In, Out>[] = [];
  private readonly sizes: ReturnType<typeof batchSizes.labels>;

  constructor(
    private readonly run: (inputs: In[]) => Promise<Out[]>,
    private readonly options: BatcherOptions<In>,
  ) {
    this.sizes = batchSizes.labels(options.name);
  }

  add(input: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.flush());
      this.pending.push({ input, resolve, reject });
    });
  }

  private flush(): void {
    const firsts = new Map<string, Pending<In, Out>>();
    const repeats: Pending<In, Out>[] = [];
    for (const item of this.pending) {
      const key = this.options.key(item.input);
      if (firsts.has(key)) repeats.push(item);
      else firsts.set(key, item);
    }
    this.pending = [];
    const ordered = [...firsts].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, item]) => item);
    const batches: Pending<In, Out>[][] = [];
    for (let start = 0; start < ordered.length; start += this.options.maxBatch) batches.push(ordered.slice(start, start + this.options.maxBatch));
    void Promise.all(batches.map((batch) => this.settle(batch, false))).then(() => this.requeue(repeats));
  }

  /** Repeats go ahead of calls made since, so a stream of calls on one key cannot overtake them. */
  private requeue(items: Pending<In, Out>[]): void {
    if (items.length === 0) return;
    if (this.pending.length === 0) setImmediate(() => this.flush());
    this.pending.unshift(...items);
  }

  private async settle(batch: Pending<In, Out>[], retried: boolean): Promise<void> {
    try {
      this.sizes.observe(batch.length);
      const outputs = await this.run(batch.map((item) => item.input));
      if (outputs.length !== batch.length) throw new Error(`a batch of ${batch.length} answered ${outputs.length} outputs`);
      batch.forEach((item, index) => item.resolve(outputs[index]!));
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code === deadlockDetected && (batch.length > 1 || !retried)) {
        await Promise.all(batch.map((item) => this.settle([item], true)));
        return;
      }
      for (const item of batch) item.reject(error);
    }
  }
}
