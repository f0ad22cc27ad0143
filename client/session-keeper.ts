import { Code, type ConnectError } from "@connectrpc/connect";
import { PortcullisError, SessionEndedError } from "./errors.js";
import type { StoredSession, TokenStorage } from "./storage.js";
import { clockSkewMs, lifetimeMs, type Pair } from "./token-pair.js";

/** The server's reason (SESSION_REVOKED, TOKEN_INVALID, …), or "SIGNED_OUT" / "EXPIRED". */
export type SessionEndReason = string;

/** The part of the Web Locks API (navigator.locks) the keeper uses; with `query`, tabs also learn at once which refresh token is used. */
export interface Locks {
  request(name: string, callback: () => Promise<unknown>): Promise<unknown>;
  query?(): Promise<{ held?: { name?: string }[] }>;
}

/** Codes after which a refresh may or may not have happened on the server. */
const answerLost = new Set([Code.DeadlineExceeded, Code.Unavailable, Code.Unknown]);

/** How long a tab waits for another tab's refreshed pair to reach its Web Storage before refreshing itself. */
const arrivalWaitMs = 2000;

export interface KeeperOptions {
  baseUrl: string;
  storage: TokenStorage;
  /** AuthService.RefreshToken, on a path that stores nothing itself; the times as the server sent them. */
  refresh(refreshToken: string): Promise<Pair>;
  onSessionEnd?: (event: { reason: SessionEndReason }) => void;
  refreshAheadSeconds: number;
  locks: Locks | null;
  /** This device's clock, which every stored expiry time is kept on. */
  now: () => number;
}

interface EndMessage {
  reason: SessionEndReason;
  sessionId?: string;
}

/**
 * One client's session: hands calls an access token that is not about to
 * expire, refreshing once however many calls wait (and, through `locks`, once
 * across the origin's tabs), and ends it — storage cleared, onSessionEnd fired
 * once, other tabs told — when the server says it is over.
 */
export class SessionKeeper {
  private refreshing?: Promise<StoredSession>;
  /** This client has seen a session whose end it has not announced yet. */
  private holding = false;
  /** Ends this tab's hold on the lock that says its last refresh token is used. */
  private releaseUsedMark?: () => void;
  private channel?: BroadcastChannel;

  constructor(private readonly options: KeeperOptions) {
    if (typeof BroadcastChannel === "function") {
      this.channel = new BroadcastChannel(`portcullis-session:${options.baseUrl}`);
      this.channel.addEventListener("message", (event) => void this.endedElsewhere(event.data));
      // Node keeps a process alive for an open channel; browsers have no unref.
      (this.channel as { unref?: () => void }).unref?.();
    }
    // So that a tab that has made no call yet still hears another tab end the session; a failing storage shows on the first call.
    this.load().catch(() => {});
  }

  async load(): Promise<StoredSession | null> {
    const session = await this.options.storage.load();
    if (session) this.holding = true;
    return session;
  }

  /** `session`'s times as the server sent them. */
  async signedIn(session: StoredSession): Promise<void> {
    await this.options.storage.save(this.onLocalClock(session));
    this.holding = true;
  }

  /** The app called RefreshToken itself; the ids carry over when it refreshed the stored session. */
  async refreshedByApp(refreshToken: string, pair: Pair): Promise<void> {
    const stored = await this.load();
    await this.signedIn(stored?.refreshToken === refreshToken ? { ...stored, ...pair } : pair);
  }

  async steppedUp(accessToken: string, accessTokenExpireTime: number): Promise<void> {
    // Written after a refresh on its way, or that refresh's older access token would replace the stepped-up one.
    await this.refreshing?.catch(() => {});
    const stored = await this.load();
    const skew = clockSkewMs(accessToken, accessTokenExpireTime, this.options.now());
    if (stored) await this.options.storage.save({ ...stored, accessToken, accessTokenExpireTime: accessTokenExpireTime - skew });
  }

  /** The session to call with, its access token refreshed first if it expires within the margin; null when signed out. */
  async fresh(): Promise<StoredSession | null> {
    const session = await this.load();
    if (!session) return null;
    // A quarter of the lifetime at most, or a short-lived token would be refreshed on every call.
    const margin = Math.min(this.options.refreshAheadSeconds * 1000, (lifetimeMs(session.accessToken) ?? Infinity) / 4);
    const left = session.accessTokenExpireTime - this.options.now();
    if (left > margin) return session;
    if (left <= 0) return this.refresh(session);
    // Early: a refresh that fails short of ending the session (offline, rate limited, timed out) leaves a token that still works.
    return this.refresh(session).catch((e: unknown) => {
      if (e instanceof SessionEndedError) throw e;
      return session;
    });
  }

  /** A session newer than `seen`: every call that asks while a refresh is on its way waits for that one. */
  refresh(seen: StoredSession): Promise<StoredSession> {
    this.refreshing ??= this.underLock(() => this.rotate(seen)).finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** The call's token was refused for good (SESSION_REVOKED, or TOKEN_INVALID after a refresh): the session ends, unless another has been signed in since. */
  async refused(used: StoredSession, error: PortcullisError): Promise<PortcullisError> {
    const stored = await this.load();
    if (!this.sameSession(stored, used)) return error;
    return this.endLoaded(stored, error.reason ?? "UNAUTHENTICATED", error);
  }

  /** Clears the storage, fires onSessionEnd once and tells the other tabs; the error to reject the call with. */
  async end(reason: SessionEndReason, error?: ConnectError): Promise<SessionEndedError> {
    return this.endLoaded(await this.load(), reason, error);
  }

  /** `end` for the session just loaded. */
  private async endLoaded(stored: StoredSession | null, reason: SessionEndReason, error?: ConnectError): Promise<SessionEndedError> {
    await this.options.storage.save(null);
    if (this.holding) {
      this.announce(reason);
      this.channel?.postMessage({ reason, sessionId: stored?.sessionId } satisfies EndMessage);
    }
    return SessionEndedError.because(reason, error);
  }

  /** Stops hearing other tabs and lets go of the used-token mark; calls still work. */
  close(): void {
    this.channel?.close();
    this.channel = undefined;
    this.releaseUsedMark?.();
    this.releaseUsedMark = undefined;
  }

  /**
   * Whether `current`, loaded after the server refused `refused`, is still that session. A session signed in again
   * by another tab meanwhile is not, and stays; the same session rotated by another tab is, and ends with it: the
   * server revokes a session, not a pair. One without an id cannot be told apart, and ends.
   */
  private sameSession(current: StoredSession | null, refused: StoredSession): boolean {
    return !current?.sessionId || current.sessionId === refused.sessionId;
  }

  private underLock(run: () => Promise<StoredSession>): Promise<StoredSession> {
    const { locks, baseUrl } = this.options;
    return locks ? (locks.request(`portcullis-refresh:${baseUrl}`, run) as Promise<StoredSession>) : run();
  }

  private async rotate(seen: StoredSession): Promise<StoredSession> {
    let stored = await this.load();
    if (stored?.refreshToken === seen.refreshToken && (await this.usedElsewhere(seen.refreshToken))) stored = await this.arrival(seen.refreshToken);
    // Emptied by another tab, which has told us (or is about to) why.
    if (!stored) throw await this.endLoaded(null, "SIGNED_OUT");
    // Refreshed by another tab or an earlier call: the used token presented again would revoke the session.
    if (stored.refreshToken !== seen.refreshToken) return stored;
    if (stored.refreshTokenExpireTime <= this.options.now()) throw await this.endLoaded(stored, "EXPIRED");
    let pair: Pair;
    try {
      pair = await this.refreshOnServer(stored.refreshToken);
    } catch (e) {
      const error = PortcullisError.from(e);
      // Refused (reused, revoked, expired): over. Offline, UNAVAILABLE or a limit keep the pair for a later try.
      if (error.code === Code.Unauthenticated) {
        const current = await this.load();
        if (!this.sameSession(current, stored)) throw SessionEndedError.because("SIGNED_OUT", error);
        throw await this.endLoaded(current, error.reason ?? "UNAUTHENTICATED", error);
      }
      throw error;
    }
    // Signed out (or in again) while the refresh was on its way: a signed-out session must not come back.
    if ((await this.options.storage.load())?.refreshToken !== stored.refreshToken) throw SessionEndedError.because("SIGNED_OUT");
    const next = { ...stored, ...this.onLocalClock(pair) };
    await this.options.storage.save(next);
    await this.markUsed(stored.refreshToken);
    return next;
  }

  /**
   * A refresh whose answer never came may still have rotated the pair on the
   * server, and the old refresh token presented later would count as reuse and
   * revoke the session. Asked again at once, inside the server's
   * REFRESH_REUSE_INTERVAL, the server answers with the same successor.
   */
  private async refreshOnServer(refreshToken: string): Promise<Pair> {
    try {
      return await this.options.refresh(refreshToken);
    } catch (e) {
      if (!answerLost.has(PortcullisError.from(e).code)) throw e;
      return this.options.refresh(refreshToken);
    }
  }

  /**
   * Web Storage reaches other tabs a moment late, even under the lock (Chromium
   * shows the old value to a queued tab about a third of the time). The lock
   * manager answers at once: a lock held under the used token's digest, taken
   * before the refresh lock is let go, tells the next tab not to present it.
   */
  private async markUsed(refreshToken: string): Promise<void> {
    const locks = this.options.locks;
    if (!locks?.query) return;
    this.releaseUsedMark?.();
    // A name of this tab's own, so that taking it never waits on another tab.
    const name = `${await this.usedMarkName(refreshToken)}:${crypto.randomUUID()}`;
    // Best effort: a lock manager that refuses the mark must not keep the refresh from settling.
    await new Promise<void>((granted) => {
      locks
        .request(name, () => {
          granted();
          return new Promise<void>((release) => (this.releaseUsedMark = release));
        })
        .catch(() => granted());
    });
  }

  private async usedElsewhere(refreshToken: string): Promise<boolean> {
    const locks = this.options.locks;
    if (!locks?.query) return false;
    const prefix = `${await this.usedMarkName(refreshToken)}:`;
    return ((await locks.query()).held ?? []).some((lock) => lock.name?.startsWith(prefix));
  }

  /** The stored session once the other tab's write reaches ours; if it never does (a duplicated tab's own sessionStorage), what is there. */
  private async arrival(usedRefreshToken: string): Promise<StoredSession | null> {
    for (const deadline = Date.now() + arrivalWaitMs; ; await new Promise((resolve) => setTimeout(resolve, 20))) {
      const stored = await this.options.storage.load();
      if (stored?.refreshToken !== usedRefreshToken || Date.now() > deadline) return stored;
    }
  }

  /** A digest, not the token: every script of the origin can list lock names. */
  private async usedMarkName(refreshToken: string): Promise<string> {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(refreshToken)));
    const hex = Array.from(digest.subarray(0, 16), (byte) => byte.toString(16).padStart(2, "0")).join("");
    return `portcullis-refresh-used:${this.options.baseUrl}:${hex}`;
  }

  /** A pair as the server dated it, moved onto this device's clock. */
  private onLocalClock<T extends Pair>(pair: T): T {
    const skew = clockSkewMs(pair.accessToken, pair.accessTokenExpireTime, this.options.now());
    return { ...pair, accessTokenExpireTime: pair.accessTokenExpireTime - skew, refreshTokenExpireTime: pair.refreshTokenExpireTime - skew };
  }

  private announce(reason: SessionEndReason): void {
    this.holding = false;
    const onSessionEnd = this.options.onSessionEnd;
    // As an event listener's would, an exception in the app's handler surfaces on its own instead of failing the call.
    if (onSessionEnd) queueMicrotask(() => onSessionEnd({ reason }));
  }

  private async endedElsewhere(message: unknown): Promise<void> {
    const { reason, sessionId } = (message ?? {}) as Partial<EndMessage>;
    const stored = await this.options.storage.load();
    if (stored) {
      // Another client's session, in storage of its own.
      if (!sessionId || stored.sessionId !== sessionId) return;
      await this.options.storage.save(null);
    }
    if (this.holding) this.announce(typeof reason === "string" ? reason : "SIGNED_OUT");
  }
}
