import type { Mail } from "./mail.js";

/** What every mail says about where it comes from. */
export interface MailSender {
  productName: string;
  /** The app that reads "#token=…" from a link; the fragment never reaches a server's logs. */
  appUrl: string;
}

const unexpected = "If you did not ask for this, you can ignore this message; nothing changes until the code is used.";

function compose(to: string, subject: string, paragraphs: string[]): Mail {
  const html = paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join("\n");
  return { to, subject, text: `${paragraphs.join("\n\n")}\n`, html: `<!doctype html>\n<html><body>\n${html}\n</body></html>\n` };
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const minutes = (seconds: number) => `${Math.round(seconds / 60)} minutes`;

export const mailTemplates = {
  /** A new account's address, or a new address for an account. */
  verifyAddress(sender: MailSender, to: string, secret: { code: string; token: string; ttlSeconds: number }): Mail {
    return compose(to, `${sender.productName}: confirm your email address`, [
      `Your ${sender.productName} confirmation code is ${secret.code}.`,
      `Or open this link: ${sender.appUrl}/verify-email#token=${secret.token}`,
      `The code and the link work once, for ${minutes(secret.ttlSeconds)}.`,
      unexpected,
    ]);
  },

  /** Register with an address that has an account: tell its owner, never the caller. */
  registrationAttempt(sender: MailSender, to: string): Mail {
    return compose(to, `${sender.productName}: someone tried to register with your address`, [
      `Someone tried to create a ${sender.productName} account with this email address, which already has one.`,
      `If it was you, sign in instead; if you forgot your password, reset it: ${sender.appUrl}/reset-password`,
      "If it was not you, you need do nothing: no account was created and yours is unchanged.",
    ]);
  },

  /** Sent to the old address when a change to another one starts. */
  addressChangeStarted(sender: MailSender, to: string, newAddressMasked: string): Mail {
    return compose(to, `${sender.productName}: your email address is being changed`, [
      `A change of your ${sender.productName} account's email address to ${newAddressMasked} was started.`,
      "It takes effect only once the new address is confirmed; until then this address stays.",
      `If this was not you, reset your password at once: ${sender.appUrl}/reset-password`,
    ]);
  },

  passwordReset(sender: MailSender, to: string, secret: { code: string; token: string; ttlSeconds: number }): Mail {
    return compose(to, `${sender.productName}: reset your password`, [
      `Your ${sender.productName} password reset code is ${secret.code}.`,
      `Or open this link: ${sender.appUrl}/reset-password#token=${secret.token}`,
      `The code and the link work once, for ${minutes(secret.ttlSeconds)}.`,
      "If you did not ask for this, you can ignore this message; your password stays as it is.",
    ]);
  },

  passwordChanged(sender: MailSender, to: string, when: Date): Mail {
    return compose(to, `${sender.productName}: your password was changed`, [
      `Your ${sender.productName} password was changed at ${when.toISOString()}, and every session was signed out.`,
      `If this was not you, reset your password at once: ${sender.appUrl}/reset-password`,
    ]);
  },

  newDevice(sender: MailSender, to: string, signIn: { when: Date; deviceName: string; ipAddress: string; userAgent: string }): Mail {
    return compose(to, `${sender.productName}: sign-in from a new device`, [
      `Your ${sender.productName} account was signed in to from a device it had not seen before.`,
      `When: ${signIn.when.toISOString()}\nDevice: ${signIn.deviceName || "unnamed"}\nIP address: ${signIn.ipAddress}\nBrowser or app: ${signIn.userAgent || "unknown"}`,
      `If this was you, you need do nothing. If not, reset your password and sign out other sessions: ${sender.appUrl}/reset-password`,
    ]);
  },

  /** A recovery code was used and few are left: time to make new ones before the last is gone. */
  fewRecoveryCodes(sender: MailSender, to: string, remaining: number): Mail {
    return compose(to, `${sender.productName}: make new recovery codes`, [
      `A recovery code of your ${sender.productName} account was just used; ${remaining === 0 ? "none is" : `only ${remaining} ${remaining === 1 ? "is" : "are"}`} left.`,
      "Make new ones in your account's security settings while you can still sign in; the old ones then stop working.",
      `If you did not use a recovery code, someone may have one: reset your password and make new codes at once: ${sender.appUrl}/reset-password`,
    ]);
  },

  totpTurnedOn(sender: MailSender, to: string): Mail {
    return compose(to, `${sender.productName}: two-step sign-in turned on`, [
      `Two-step sign-in with an authenticator app was turned on for your ${sender.productName} account.`,
      `If this was not you, someone has your password or a signed-in device: reset your password at once: ${sender.appUrl}/reset-password`,
    ]);
  },

  // The passkey's name is left out: whoever added it chose it, and could make the warning read as routine.
  passkeyAdded(sender: MailSender, to: string): Mail {
    return compose(to, `${sender.productName}: a passkey was added`, [
      `A passkey was added to your ${sender.productName} account; it signs in without a password.`,
      `If this was not you, reset your password at once, then delete the passkey in your account: ${sender.appUrl}/reset-password`,
    ]);
  },

  passkeyRemoved(sender: MailSender, to: string): Mail {
    return compose(to, `${sender.productName}: a passkey was removed`, [
      `A passkey was removed from your ${sender.productName} account; it no longer signs in.`,
      `If this was not you, someone has a signed-in device of yours: reset your password at once: ${sender.appUrl}/reset-password`,
    ]);
  },

  totpTurnedOff(sender: MailSender, to: string): Mail {
    return compose(to, `${sender.productName}: two-step sign-in turned off`, [
      `Two-step sign-in with an authenticator app was turned off for your ${sender.productName} account; its recovery codes no longer work.`,
      `If this was not you, reset your password at once and turn it on again: ${sender.appUrl}/reset-password`,
    ]);
  },

  /** Every wrong second factor a user may give was given: someone may be guessing. */
  mfaCodesRefused(sender: MailSender, to: string, lockSeconds: number): Mail {
    return compose(to, `${sender.productName}: too many wrong sign-in codes`, [
      `Too many wrong authenticator or recovery codes were given for your ${sender.productName} account; codes are refused for the next ${minutes(lockSeconds)}.`,
      `If this was not you, someone may have your password: change it now: ${sender.appUrl}/reset-password`,
    ]);
  },
};
