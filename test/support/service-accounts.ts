import { TokenService } from "../../gen/portcullis/v1/token_service_pb.js";
import { grpcClient } from "./clients.js";
import { runAdmin } from "./platform.js";

/** A service account made as an operator would, with the admin tool: its client secret, shown once. */
export async function createServiceAccount(env: Record<string, string>, name: string, audiences: string[]): Promise<string> {
  await runAdmin(env, "service", "create", name, "--audience", audiences.join(","));
  const { stdout } = await runAdmin(env, "service", "secret", name);
  return stdout.trim().split("\n").at(-1)!;
}

/** A service token for `audience`, got with the client secret over gRPC. */
export async function serviceToken(grpcPort: number, clientId: string, clientSecret: string, audience: string): Promise<string> {
  const tokens = grpcClient(TokenService, grpcPort);
  try {
    const issued = await tokens.call("issueServiceToken", { clientId, clientSecret, audience });
    if (issued.error) throw issued.error;
    return issued.response.accessToken;
  } finally {
    tokens.close();
  }
}

/** A JWT's claims, read without verifying: what a test checks the issuer put in. */
export const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
