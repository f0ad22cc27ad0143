/** Where the client keeps the session's tokens between calls (and, with a Web Storage adapter, between page loads and tabs). */

export interface StoredSession {
  accessToken: string;
  /** Milliseconds since the epoch, on this device's clock: the server's time, moved by how far the two clocks differ. */
  accessTokenExpireTime: number;
  refreshToken: string;
  /** Milliseconds since the epoch, on this device's clock, as accessTokenExpireTime. */
  refreshTokenExpireTime: number;
  sessionId?: string;
  userId?: string;
}

export interface TokenStorage {
  load(): StoredSession | null | Promise<StoredSession | null>;
  save(session: StoredSession | null): void | Promise<void>;
}

/** The default: the tokens live as long as the page, and no script reading Web Storage can take them. */
export function memoryStorage(): TokenStorage {
  let kept: StoredSession | null = null;
  return {
    load: () => kept,
    save: (session) => {
      kept = session && { ...session };
    },
  };
}

/** Shared by every tab of the origin and kept across restarts of the browser. */
export function localStorageAdapter(key = "portcullis.session", storage?: Storage): TokenStorage {
  return webStorage(key, storage ?? globalThis.localStorage, "localStorage");
}

/** Kept per tab, across reloads of it. */
export function sessionStorageAdapter(key = "portcullis.session", storage?: Storage): TokenStorage {
  return webStorage(key, storage ?? globalThis.sessionStorage, "sessionStorage");
}

function webStorage(key: string, storage: Storage | undefined, name: string): TokenStorage {
  if (!storage) throw new Error(`${name} is not available here; pass a Storage or use memoryStorage()`);
  return {
    load: () => parseSession(storage.getItem(key)),
    save: (session) => (session ? storage.setItem(key, JSON.stringify(session)) : storage.removeItem(key)),
  };
}

/** Anything but a whole session (another library's value under the key, a hand edit) reads as signed out. */
function parseSession(raw: string | null): StoredSession | null {
  if (raw === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  const text = (field: unknown) => typeof field === "string" && field !== "";
  const optional = (field: unknown) => field === undefined || typeof field === "string";
  if (!text(v.accessToken) || !text(v.refreshToken)) return null;
  if (!Number.isFinite(v.accessTokenExpireTime) || !Number.isFinite(v.refreshTokenExpireTime)) return null;
  if (!optional(v.sessionId) || !optional(v.userId)) return null;
  return {
    accessToken: v.accessToken as string,
    accessTokenExpireTime: v.accessTokenExpireTime as number,
    refreshToken: v.refreshToken as string,
    refreshTokenExpireTime: v.refreshTokenExpireTime as number,
    ...(v.sessionId === undefined ? {} : { sessionId: v.sessionId as string }),
    ...(v.userId === undefined ? {} : { userId: v.userId as string }),
  };
}
