import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService } from "../gen/portcullis/v1/admin_service_pb.js";
import { AuthService } from "../gen/portcullis/v1/auth_service_pb.js";
import type { DeviceSchema } from "../gen/portcullis/v1/common_pb.js";
import { KycService } from "../gen/portcullis/v1/kyc_service_pb.js";
import { MfaService } from "../gen/portcullis/v1/mfa_service_pb.js";
import { PasskeyService, type FinishPasskeySignInResponse, type Passkey } from "../gen/portcullis/v1/passkey_service_pb.js";
import { SessionService } from "../gen/portcullis/v1/session_service_pb.js";
import { PortcullisError } from "./errors.js";
import { registerPasskey, signInWithPasskey } from "./passkeys.js";
import { sessionInterceptor, typedErrors } from "./session-interceptor.js";
import { SessionKeeper, type Locks, type SessionEndReason } from "./session-keeper.js";
import { memoryStorage, type StoredSession, type TokenStorage } from "./storage.js";
import { pairOf } from "./token-pair.js";

export interface PortcullisClientOptions {
  /** Where the Connect gateway answers, e.g. "https://auth.example.com". */
  baseUrl: string;
  /** Default memoryStorage(). */
  storage?: TokenStorage;
  /** Once per session, in every tab, when it ends: the server's reason, or "SIGNED_OUT" / "EXPIRED". */
  onSessionEnd?: (event: { reason: SessionEndReason }) => void;
  /** Refresh this long before the access token expires: default 30, never more than a quarter of its lifetime. */
  refreshAheadSeconds?: number;
  fetch?: typeof globalThis.fetch;
  /** Default globalThis.navigator?.locks, which makes one refresh across the origin's tabs; null: in this client only. */
  locks?: Locks | null;
  /**
   * How long a refresh may take before it is asked once more and then fails like an unreachable server (the pair is
   * kept): default 4000. Keep it under half the server's REFRESH_REUSE_INTERVAL (10 s), so that the second ask
   * reaches the server while it still answers a repeated refresh token with the same successor.
   */
  refreshTimeoutMs?: number;
  /** This device's clock, default Date.now; expiry times from the server are kept on it. */
  now?: () => number;
}

/** The contract's services as a person's browser calls them; TokenService, for services, is left out: the person's token would go with its calls. */
export interface PortcullisClient {
  auth: Client<typeof AuthService>;
  sessions: Client<typeof SessionService>;
  kyc: Client<typeof KycService>;
  mfa: Client<typeof MfaService>;
  passkeys: Client<typeof PasskeyService>;
  admin: Client<typeof AdminService>;
  currentSession(): Promise<StoredSession | null>;
  /** Logout (an already-ended session is no error) and clear the storage. */
  signOut(): Promise<void>;
  registerPasskey(options?: { name?: string; currentPassword?: string }): Promise<Passkey>;
  signInWithPasskey(options: { device: MessageInitShape<typeof DeviceSchema> }): Promise<FinishPasskeySignInResponse>;
  /**
   * For an app that replaces this client with a new one: stops listening for
   * other tabs' sign-outs (onSessionEnd then fires only for this client's own
   * calls) and lets go of the lock it holds. The session and its storage stay.
   */
  close(): void;
}

export function createPortcullisClient(options: PortcullisClientOptions): PortcullisClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const transportOf = (interceptors: Parameters<typeof createConnectTransport>[0]["interceptors"]) =>
    createConnectTransport({ baseUrl, fetch: options.fetch, interceptors });
  // The keeper's own RefreshToken goes around the session interceptor: the keeper stores its answer.
  const refresher = createClient(AuthService, transportOf([typedErrors]));
  // Bounded: it runs under the origin-wide refresh lock, where a hung request would stall every tab's calls.
  const refreshOptions = { timeoutMs: options.refreshTimeoutMs ?? 4_000 };
  const keeper = new SessionKeeper({
    baseUrl,
    storage: options.storage ?? memoryStorage(),
    refresh: async (refreshToken) => pairOf((await refresher.refreshToken({ refreshToken }, refreshOptions)).tokens),
    onSessionEnd: options.onSessionEnd,
    refreshAheadSeconds: Math.max(0, options.refreshAheadSeconds ?? 30),
    locks: options.locks === undefined ? (globalThis.navigator?.locks ?? null) : options.locks,
    now: options.now ?? Date.now,
  });
  const transport = transportOf([typedErrors, sessionInterceptor(keeper)]);
  const passkeys = createClient(PasskeyService, transport);
  const auth = createClient(AuthService, transport);

  return {
    auth,
    sessions: createClient(SessionService, transport),
    kyc: createClient(KycService, transport),
    mfa: createClient(MfaService, transport),
    passkeys,
    admin: createClient(AdminService, transport),
    currentSession: () => keeper.load(),
    async signOut() {
      let loggedOut = false;
      try {
        if (await keeper.load()) {
          await auth.logout({});
          // Logout's answer has ended the session in the session interceptor.
          loggedOut = true;
        }
      } catch (e) {
        // Revoked, expired or refused already: signed out all the same.
        if (!(e instanceof PortcullisError && e.code === Code.Unauthenticated)) throw e;
      } finally {
        // Even when the server could not be reached, this device forgets the tokens.
        if (!loggedOut) await keeper.end("SIGNED_OUT");
      }
    },
    registerPasskey: (request) => registerPasskey(passkeys, request),
    signInWithPasskey: (request) => signInWithPasskey(passkeys, request.device),
    close: () => keeper.close(),
  };
}
