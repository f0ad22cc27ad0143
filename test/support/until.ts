import { setTimeout as sleep } from "node:timers/promises";

/** Waits until `condition` holds, asking every 20 ms; fails once `ms` have passed without it. */
export async function until(condition: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not so after ${ms} ms`);
    await sleep(20);
  }
}
