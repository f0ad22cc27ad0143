import { randomUUID } from "node:crypto";
import { audit } from "../audit/store.js";
import type { CallOrigin } from "../kernel/call.js";
import { Code, ConnectError, invalidArgument } from "../kernel/errors.js";
import { serviceNamePattern } from "../kernel/validation.js";
import type { Database } from "../platform/database.js";
import type { ClientSecrets } from "./client-secrets.js";
import { readPublicJwk } from "./public-keys.js";
import { serviceAccountStore as store, type NewCredential, type ServiceAccountRow, type ServiceCredentialRow } from "./store.js";

/** Two, so a credential rotates without downtime: add the new one, move the service over, revoke the old one. */
export const maxActiveCredentials = 2;

/** A service account as operators see it: never a secret, only which credentials are active. */
export interface ServiceAccount extends ServiceAccountRow {
  credentials: ServiceCredentialRow[];
}

/**
 * Why a name may not be a service account's, if it may not. A service token's
 * `sub` is the account's name, and a user's is their id: a name that reads as
 * a UUID (as Postgres reads one: hyphens anywhere) could pass for a user at a
 * service that tells them apart by `sub`; and a name that is Portcullis's own
 * issuer or audience could pass for Portcullis.
 */
function nameProblem(name: string, reservedNames: readonly string[]): string | undefined {
  if (/^[0-9a-f]{32}$/.test(name.replaceAll("-", ""))) return "must not read as a UUID, which a user id is";
  if (reservedNames.includes(name)) return "is Portcullis's own issuer or audience";
  return undefined;
}

/** Accounts are listed by name, so the last name shown is where the next page starts. */
export function encodeNamePageToken(name: string): string {
  return Buffer.from(name).toString("base64url");
}

export function decodeNamePageToken(token: string): string {
  const name = Buffer.from(token, "base64url").toString();
  if (!serviceNamePattern.test(name) || encodeNamePageToken(name) !== token) {
    throw invalidArgument([{ field: "page_token", description: "not a token from a previous response" }]);
  }
  return name;
}

const noSuchAccount = () => new ConnectError("no such service account", Code.NotFound);

/**
 * Operators' management of service accounts and their credentials, for
 * AdminService and the command-line tool: each change in one transaction
 * with its audit row naming the operator (detail.actor, a user id or
 * "os:<name>"). A generated client secret is returned once and kept only as
 * its keyed hash.
 */
export class ServiceAccounts {
  constructor(
    private readonly db: Database,
    private readonly secrets: ClientSecrets,
    /** JWT_ISSUER and JWT_AUDIENCE: no account may be named as Portcullis is. */
    private readonly reservedNames: readonly string[],
  ) {}

  async create(actor: string, name: string, audiences: readonly string[], permissions: readonly string[], origin: CallOrigin): Promise<ServiceAccount> {
    const problem = nameProblem(name, this.reservedNames);
    if (problem) throw invalidArgument([{ field: "name", description: problem }]);
    return this.db.transaction(async (tx) => {
      const account = await store.create(tx, name, audiences, permissions);
      if (!account) throw new ConnectError(`a service account named "${name}" already exists`, Code.AlreadyExists);
      await audit(tx, origin, {
        event: "service_account.create",
        outcome: "success",
        detail: { actor, client_id: name, audiences: audiences.join(","), permissions: permissions.join(",") },
      });
      return { ...account, credentials: [] };
    });
  }

  /** A page of accounts by name, with their active credentials, and the name the next page starts after. */
  list(actor: string, pageSize: number, after: string | undefined, origin: CallOrigin): Promise<{ page: ServiceAccount[]; next?: string }> {
    return this.db.transaction(async (tx) => {
      const rows = await store.list(tx, after, pageSize + 1);
      const page = rows.slice(0, pageSize);
      const credentials = await store.activeCredentials(tx, page.map((row) => row.name));
      await audit(tx, origin, { event: "admin.read", outcome: "success", detail: { actor, call: "list_service_accounts" } });
      return {
        page: page.map((row) => ({ ...row, credentials: credentials.filter((credential) => credential.service_name === row.name) })),
        next: rows.length > pageSize ? page.at(-1)!.name : undefined,
      };
    });
  }

  /** The account gets no more tokens; disabling it again changes nothing. */
  async disable(actor: string, name: string, origin: CallOrigin): Promise<void> {
    await this.db.transaction(async (tx) => {
      if (!(await store.disable(tx, name))) throw noSuchAccount();
      await audit(tx, origin, { event: "service_account.disable", outcome: "success", detail: { actor, client_id: name } });
    });
  }

  /** Adds a public key (a JWK as JSON) the service signs client assertions with the private half of. */
  async addPublicKey(actor: string, name: string, publicJwk: string, origin: CallOrigin): Promise<ServiceCredentialRow> {
    const key = await readPublicJwk(publicJwk);
    if ("problem" in key) throw invalidArgument([{ field: "public_key_jwk", description: key.problem }]);
    return this.add(actor, name, { id: randomUUID(), kind: "public_key", keyId: key.keyId, publicJwk: key.jwk }, origin);
  }

  /** Adds a generated client secret: the only time it is seen. */
  async addSecret(actor: string, name: string, origin: CallOrigin): Promise<{ credential: ServiceCredentialRow; secret: string }> {
    const { secret, hash } = this.secrets.generate();
    const credential = await this.add(actor, name, { id: randomUUID(), kind: "client_secret", secretHash: hash }, origin);
    return { credential, secret };
  }

  /** The credential proves nothing from now on. */
  async revokeCredential(actor: string, name: string, credentialId: string, origin: CallOrigin): Promise<void> {
    await this.db.transaction(async (tx) => {
      if (!(await store.revokeCredential(tx, name, credentialId))) {
        throw new ConnectError("the service account has no active credential with that id", Code.NotFound);
      }
      await audit(tx, origin, {
        event: "service_credential.revoke",
        outcome: "success",
        detail: { actor, client_id: name, credential_id: credentialId },
      });
    });
  }

  /** Counted under the account's row lock, so two additions at once cannot both pass the limit. */
  private add(actor: string, name: string, credential: NewCredential, origin: CallOrigin): Promise<ServiceCredentialRow> {
    return this.db.transaction(async (tx) => {
      if (!(await store.lock(tx, name))) throw noSuchAccount();
      const active = await store.activeCredentials(tx, [name]);
      if (active.length >= maxActiveCredentials) {
        throw new ConnectError(`the service account has ${maxActiveCredentials} active credentials; revoke a credential first`, Code.FailedPrecondition);
      }
      const keyId = credential.kind === "public_key" ? credential.keyId : undefined;
      if (keyId && active.some((known) => known.key_id === keyId)) {
        throw new ConnectError("this key is already an active credential of the service account", Code.AlreadyExists);
      }
      const row = await store.addCredential(tx, name, credential);
      await audit(tx, origin, {
        event: "service_credential.add",
        outcome: "success",
        detail: { actor, client_id: name, credential_id: row.id, kind: row.kind, ...(keyId && { key_id: keyId }) },
      });
      return row;
    });
  }
}
