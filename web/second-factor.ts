import { StepUpRequiredError, type PortcullisClient } from "../client/index.js";
import { element } from "./ui.js";

/** What a person types as a second factor: six digits from the authenticator app, anything else a recovery code. */
export function proofOf(typed: string) {
  const code = typed.trim();
  return { factor: /^[0-9]{6}$/.test(code) ? { case: "totpCode" as const, value: code } : { case: "recoveryCode" as const, value: code } };
}

/** The person closed the second-factor prompt, or the session ended while it was open: nothing to report. */
export class StepUpCancelled extends Error {}

/**
 * Runs `action`; when the server asks for a recent second factor, asks the person for one, steps the session
 * up (the client keeps the stronger access token) and runs `action` once more.
 */
export async function withStepUp<T>(client: PortcullisClient, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof StepUpRequiredError)) throw error;
    const typed = await askForSecondFactor();
    if (typed === undefined) throw new StepUpCancelled("step-up cancelled");
    await client.mfa.stepUp({ proof: proofOf(typed) });
    return action();
  }
}

function askForSecondFactor(): Promise<string | undefined> {
  const form = element<HTMLFormElement>("step-up-form");
  const input = element<HTMLInputElement>("step-up-code");
  const cancel = element<HTMLButtonElement>("cancel-step-up");
  input.value = "";
  form.hidden = false;
  input.focus();
  return new Promise((resolve) => {
    const finish = (typed: string | undefined) => {
      form.removeEventListener("submit", submitted);
      cancel.removeEventListener("click", cancelled);
      form.hidden = true;
      resolve(typed);
    };
    const submitted = (event: Event) => {
      event.preventDefault();
      finish(input.value);
    };
    const cancelled = () => finish(undefined);
    form.addEventListener("submit", submitted);
    cancel.addEventListener("click", cancelled);
  });
}
