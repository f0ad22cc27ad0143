import type { PortcullisClient } from "../client/index.js";
import { thisDevice } from "./device.js";
import { proofOf } from "./second-factor.js";
import { element, inputValue, onClick, onSubmit, say } from "./ui.js";

export interface SignInScreen {
  client: PortcullisClient;
  /** After the client has stored the new session's tokens. */
  signedIn(): Promise<void>;
  onError(error: unknown): void;
}

/** A first factor's answer: tokens (stored by the client), or a challenge for the second factor. */
interface FirstFactorAnswer {
  mfaChallenge?: { challengeId: string };
}

/** The signed-out screen: phone code, email and password, passkey, and the second factor when one is asked. */
export function setUpSignIn(screen: SignInScreen): { reset(): void } {
  const { client, onError } = screen;
  let phoneNumber = "";
  let challengeId = "";

  const finish = async (answer: FirstFactorAnswer) => {
    if (answer.mfaChallenge) {
      challengeId = answer.mfaChallenge.challengeId;
      element("sign-in-methods").hidden = true;
      element("mfa-form").hidden = false;
      element("mfa-code").focus();
      return;
    }
    reset();
    await screen.signedIn();
  };

  function reset() {
    challengeId = "";
    for (const id of ["code", "password", "mfa-code"]) element<HTMLInputElement>(id).value = "";
    element("code-form").hidden = true;
    element("mfa-form").hidden = true;
    element("sign-in-methods").hidden = false;
  }

  onSubmit("phone-form", async () => {
    phoneNumber = inputValue("phone");
    await client.auth.sendOtp({ phoneNumber });
    element("code-form").hidden = false;
    element("code").focus();
    say("We have sent you a code.");
  }, onError);

  onSubmit("code-form", async () => {
    await finish(await client.auth.verifyOtp({ phoneNumber, code: inputValue("code"), device: thisDevice() }));
  }, onError);

  onSubmit("password-form", async () => {
    const answer = await client.auth.login({ email: inputValue("email"), password: element<HTMLInputElement>("password").value, device: thisDevice() });
    element<HTMLInputElement>("password").value = "";
    await finish(answer);
  }, onError);

  onSubmit("mfa-form", async () => {
    await client.mfa.verifyMfa({ challengeId, proof: proofOf(element<HTMLInputElement>("mfa-code").value) });
    await finish({});
  }, onError);

  element("cancel-mfa").addEventListener("click", reset);

  onClick(element("sign-in-passkey"), async () => {
    await client.signInWithPasskey({ device: thisDevice() });
    await finish({});
  }, onError);

  return { reset };
}
