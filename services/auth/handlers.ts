import { audit } from "../platform/audit.js";
import type { Database } from "../platform/database.js";
import { Code, ConnectError, invalidArgument } from "../platform/errors.js";
import { textProblem, Violations } from "../platform/validation.js";
import type { CallContext, ServiceHandlers } from "../policy/call.js";
import type { Sessions } from "../session/sessions.js";
import type { KeyRing } from "../tokens/key-ring.js";
import type { RefreshRotation } from "../tokens/refresh.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { OtpSignIn } from "./otp.js";
import type { PasswordSignIn } from "./password-sign-in.js";
import { findUser, userMessage } from "./users.js";

export interface AuthDeps {
  db: Database;
  keyRing: KeyRing;
  otp: OtpSignIn;
  passwords: PasswordSignIn;
  refresh: RefreshRotation;
  sessions: Sessions;
}

const updatableProfileFields = new Set(["display_name"]);

export function authHandlers(deps: AuthDeps): ServiceHandlers<typeof AuthService> {
  const signedInUser = async (call: CallContext) => {
    const user = await findUser(deps.db, call.principal!.subject);
    // A valid token for a deleted user: treat like a revoked session.
    if (!user) throw new ConnectError("this account no longer exists", Code.Unauthenticated);
    return user;
  };

  return {
    sendOtp: (request, call) => deps.otp.send(request.phoneNumber, call),
    verifyOtp: (request, call) => deps.otp.verify(request.phoneNumber, request.code, request.device, call),
    register: (request, call) => deps.passwords.register(request, call),
    login: (request, call) => deps.passwords.login(request, call),

    async refreshToken(request, call) {
      if (request.refreshToken.length === 0) throw invalidArgument([{ field: "refresh_token", description: "required" }]);
      return { tokens: await deps.refresh.refresh(request.refreshToken, call) };
    },

    async logout(_request, call) {
      const principal = call.principal!;
      const revoked = await deps.db.transaction(async (tx) => {
        const ids = await deps.sessions.revoke(tx, { sessionIds: [principal.sessionId] }, "logout");
        await audit(tx, call, { event: "logout", outcome: "success", userId: principal.subject, sessionId: principal.sessionId });
        return ids;
      });
      await deps.sessions.published(revoked);
      return {};
    },

    async getProfile(_request, call) {
      return { user: userMessage(await signedInUser(call)) };
    },

    async updateProfile(request, call) {
      const paths = request.updateMask?.paths ?? [];
      const violations = new Violations();
      if (paths.length === 0) violations.add("update_mask", "name the fields to update, for example display_name");
      for (const path of paths) {
        if (!updatableProfileFields.has(path)) violations.add("update_mask", `"${path}" cannot be updated here`);
      }
      const displayName = request.user?.displayName ?? "";
      if (paths.includes("display_name")) violations.add("user.display_name", textProblem(displayName, 0, 100));
      violations.throwIfAny();
      await deps.db.query("update app_user set display_name = $1, update_time = now() where id = $2", [
        displayName,
        call.principal!.subject,
      ]);
      return { user: userMessage(await signedInUser(call)) };
    },

    async changePassword(request, call) {
      const revoked = await deps.passwords.changePassword(call.principal!, request.currentPassword, request.newPassword, call);
      return { revokedSessionCount: revoked };
    },

    getJwks: async () => ({ keys: deps.keyRing.jwks() }),
  };
}
