import { readFile } from "node:fs/promises";
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { maxActiveCredentials, type ServiceAccounts } from "../clients/service-accounts.js";
import type { CallOrigin } from "../kernel/call.js";
import { createRequestValidator } from "../policy/request-validation.js";
import {
  AddServiceCredentialRequestSchema,
  CreateServiceAccountRequestSchema,
  DisableServiceAccountRequestSchema,
  RevokeServiceCredentialRequestSchema,
} from "../../gen/portcullis/v1/admin_service_pb.js";

/** A command given wrongly: its message is for the operator, and the tool exits with 2. */
export class UsageError extends Error {}

export const serviceUsage = `Service accounts (internal services that get their own tokens from TokenService):
  service create <name> --audience <a,b> [--permission <p,q>]   create one, for the services it may get tokens for
  service key <name> <public-jwk-file>        add a public key (EC P-256, RSA of 2048 bits or more, Ed25519) for client assertions
  service secret <name>                       add a generated client secret, printed only this once
  service revoke-credential <name> <credential-id>   revoke a key or secret
  service list                                show every service account and its active credentials
  service disable <name>                      stop issuing it tokens

An account holds at most ${maxActiveCredentials} active credentials, so one rotates without downtime:
add the new one, move the service over, revoke the old one. Once an operator holds service.admin,
AdminService does all this too.`;

export type ServiceCommand =
  | { kind: "create"; name: string; audiences: string[]; permissions: string[] }
  | { kind: "key"; name: string; publicJwk: string }
  | { kind: "secret"; name: string }
  | { kind: "revoke-credential"; name: string; credentialId: string }
  | { kind: "list" }
  | { kind: "disable"; name: string };

/** The command line after "service", checked against the same rules of the contract AdminService applies. */
export async function readServiceCommand(args: string[]): Promise<ServiceCommand> {
  const [kind, name = "", ...rest] = args;
  switch (kind) {
    case "create": {
      const flags = readFlags(rest, ["--audience", "--permission"]);
      const audiences = listOf(flags["--audience"]);
      const permissions = listOf(flags["--permission"]);
      check(CreateServiceAccountRequestSchema, { name, audiences, permissions });
      return { kind, name, audiences, permissions };
    }
    case "key": {
      const [file] = exactly(rest, 1);
      const publicJwk = await readFile(file!, "utf8").catch((error: Error) => {
        throw new UsageError(`cannot read ${file}: ${error.message}`);
      });
      check(AddServiceCredentialRequestSchema, { name, publicKeyJwk: publicJwk });
      return { kind, name, publicJwk };
    }
    case "secret":
      exactly(rest, 0);
      check(AddServiceCredentialRequestSchema, { name, generateClientSecret: true });
      return { kind, name };
    case "revoke-credential": {
      const [credentialId] = exactly(rest, 1);
      check(RevokeServiceCredentialRequestSchema, { name, credentialId });
      return { kind, name, credentialId: credentialId! };
    }
    case "list":
      exactly(args.slice(1), 0);
      return { kind };
    case "disable":
      exactly(rest, 0);
      check(DisableServiceAccountRequestSchema, { name });
      return { kind, name };
    default:
      throw new UsageError(serviceUsage);
  }
}

/** Runs a checked command through the same domain logic as AdminService; what to print. */
export async function runServiceCommand(command: ServiceCommand, accounts: ServiceAccounts, actor: string, origin: CallOrigin): Promise<string> {
  switch (command.kind) {
    case "create": {
      const account = await accounts.create(actor, command.name, command.audiences, command.permissions, origin);
      return (
        `created service account ${account.name} for audiences ${account.audiences.join(", ")}; ` +
        `permissions: ${account.permissions.join(", ") || "(none)"}. Give it a credential: service key ${account.name} <public-jwk-file>, or service secret ${account.name}`
      );
    }
    case "key": {
      const credential = await accounts.addPublicKey(actor, command.name, command.publicJwk, origin);
      return `added public key ${credential.key_id} to ${command.name} as credential ${credential.id}; client assertions name it as kid`;
    }
    case "secret": {
      const { credential, secret } = await accounts.addSecret(actor, command.name, origin);
      return `added a client secret to ${command.name} as credential ${credential.id}. It is shown only now (Portcullis keeps only a hash):\n${secret}`;
    }
    case "revoke-credential":
      await accounts.revokeCredential(actor, command.name, command.credentialId, origin);
      return `revoked credential ${command.credentialId} of ${command.name}; it proves nothing from now on`;
    case "disable":
      await accounts.disable(actor, command.name, origin);
      return `disabled service account ${command.name}; it gets no more tokens`;
    case "list":
      return listing(accounts, actor, origin);
  }
}

async function listing(accounts: ServiceAccounts, actor: string, origin: CallOrigin): Promise<string> {
  const lines: string[] = [];
  let after: string | undefined;
  do {
    const { page, next } = await accounts.list(actor, 100, after, origin);
    for (const account of page) {
      lines.push(
        `${account.name}${account.disable_time ? " (DISABLED)" : ""}: audiences ${account.audiences.join(", ")}; permissions ${account.permissions.join(", ") || "(none)"}`,
      );
      for (const credential of account.credentials) {
        const what = credential.kind === "public_key" ? `public key ${credential.key_id}` : "client secret";
        const used = credential.last_use_time ? `last used ${credential.last_use_time.toISOString()}` : "never used";
        lines.push(`  ${credential.id}  ${what}, added ${credential.create_time.toISOString()}, ${used}`);
      }
      if (account.credentials.length === 0) lines.push("  (no active credential)");
    }
    after = next;
  } while (after);
  return lines.join("\n") || "no service accounts";
}

/** `--flag value` pairs, each flag at most once. */
function readFlags(args: string[], known: string[]): Record<string, string> {
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) {
    const [flag, value] = [args[i]!, args[i + 1]];
    if (!known.includes(flag) || value === undefined || flag in flags) throw new UsageError(serviceUsage);
    flags[flag] = value;
  }
  return flags;
}

const listOf = (value: string | undefined) => (value ? value.split(",").map((item) => item.trim()) : []);

function exactly(args: string[], count: number): string[] {
  if (args.length !== count) throw new UsageError(serviceUsage);
  return args;
}

function check<D extends DescMessage>(schema: D, fields: MessageInitShape<D>): void {
  const violations = createRequestValidator([])(schema, create(schema, fields));
  if (violations.length > 0) throw new UsageError(violations.map((v) => `${v.field}: ${v.description}`).join("\n"));
}
