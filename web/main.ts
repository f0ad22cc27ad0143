import { createPortcullisClient, localStorageAdapter, SessionEndedError, type PortcullisClient } from "../client/index.js";
import { setUpAccount } from "./account.js";
import { resetPasswordPage, verifyEmailLink } from "./links.js";
import { StepUpCancelled } from "./second-factor.js";
import { setUpSignIn } from "./sign-in.js";
import { element, say, showError, showScreen } from "./ui.js";

declare global {
  interface Window {
    /** The page's client, for trying calls from the browser console, e.g. `await portcullis.auth.getProfile({})`. */
    portcullis: PortcullisClient;
  }
}

/** How often a signed-in page in view asks whether its session still stands, so one revoked elsewhere shows soon. */
const sessionCheckMs = 15_000;

// Empty means the API is served from the page's own origin.
const apiBaseUrl = document.querySelector<HTMLMetaElement>('meta[name="portcullis-api"]')?.content || location.origin;

const client = createPortcullisClient({
  baseUrl: apiBaseUrl,
  // Kept across reloads and shared by the origin's tabs; the client coordinates their refreshes.
  storage: localStorageAdapter(),
  onSessionEnd: () => signedOut(),
});
window.portcullis = client;

let sessionCheck: ReturnType<typeof setInterval> | undefined;

function onError(error: unknown): void {
  if (error instanceof SessionEndedError) return signedOut();
  if (error instanceof StepUpCancelled) return;
  showError(error);
}

async function signedIn(): Promise<void> {
  showScreen("account");
  say("");
  sessionCheck ??= setInterval(checkSession, sessionCheckMs);
  await account.load();
}

/** Idempotent: the client's onSessionEnd and a call's SessionEndedError may both report one ending. */
function signedOut(): void {
  clearInterval(sessionCheck);
  sessionCheck = undefined;
  if (!element("step-up-form").hidden) element("cancel-step-up").click();
  signIn.reset();
  showScreen("sign-in");
  say("You have been signed out");
}

function checkSession(): void {
  // A hidden tab asks when it comes back into view instead.
  if (document.visibilityState === "hidden") return;
  void client.sessions.getSession({}).catch((error: unknown) => {
    if (error instanceof SessionEndedError) signedOut();
  });
}

const signIn = setUpSignIn({ client, signedIn, onError });
const account = setUpAccount({ client, onError });

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && sessionCheck !== undefined) checkSession();
});

async function start(): Promise<void> {
  if (location.pathname === "/verify-email") return verifyEmailLink(client);
  if (location.pathname === "/reset-password") return resetPasswordPage(client);
  if (await client.currentSession()) {
    await signedIn().catch(onError);
  } else {
    showScreen("sign-in");
  }
}

void start();
