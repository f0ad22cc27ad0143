import type { PortcullisClient } from "../client/index.js";
import { element, inputValue, onSubmit, say, showError, showScreen } from "./ui.js";

/** The secret of a mailed link rides in the fragment, which browsers never send to a server or in a Referer. */
function tokenInFragment(): string {
  return new URLSearchParams(location.hash.slice(1)).get("token") ?? "";
}

/** Takes the secret out of the address bar and the history once it has been read. */
function forgetFragment(): void {
  history.replaceState(null, "", location.pathname);
}

/** /verify-email#token=…: the link of a verification mail. */
export async function verifyEmailLink(client: PortcullisClient): Promise<void> {
  showScreen("verify-email");
  const token = tokenInFragment();
  forgetFragment();
  const hint = element("verify-email").querySelector(".hint")!;
  try {
    if (!token) throw new Error("This link is incomplete: open the whole link from the mail, or type the code where you registered.");
    const { email } = await client.auth.verifyEmail({ token });
    hint.textContent = "";
    say(`${email} is verified. You can sign in now.`);
  } catch (error) {
    hint.textContent = "";
    showError(error);
  }
}

/** /reset-password, with #token=… from the mail's link, or asking for the mail and then its code. */
export function resetPasswordPage(client: PortcullisClient): void {
  showScreen("reset-password");
  let email = "";
  let token = tokenInFragment();
  forgetFragment();
  if (token) {
    element("reset-request-form").hidden = true;
    element("reset-form").hidden = false;
    element("reset-code-field").hidden = true;
    element<HTMLInputElement>("reset-code").required = false;
  }

  onSubmit("reset-request-form", async () => {
    email = inputValue("reset-email");
    await client.auth.requestPasswordReset({ email });
    element("reset-form").hidden = false;
    element("reset-code").focus();
    say("If an account has that address, we have mailed it a code.");
  }, showError);

  onSubmit("reset-form", async () => {
    const newPassword = element<HTMLInputElement>("new-password").value;
    const proof = token ? { token } : { email, code: inputValue("reset-code") };
    await client.auth.resetPassword({ ...proof, newPassword });
    token = "";
    element<HTMLInputElement>("new-password").value = "";
    element("reset-request-form").hidden = true;
    element("reset-form").hidden = true;
    say("Your password has been changed and your devices signed out. Sign in with the new password.");
  }, showError);
}
