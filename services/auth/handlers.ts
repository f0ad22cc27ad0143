import type { ServiceHandlers } from "../kernel/call.js";
import { Code, ConnectError } from "../kernel/errors.js";
import { Violations } from "../kernel/validation.js";
import type { RefreshRotation } from "../session/refresh.js";
import type { Sessions } from "../session/sessions.js";
import type { KeyRing } from "../tokens/key-ring.js";
import { userMessage } from "../users/user.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { Mailer } from "./mail.js";
import type { OtpSignIn } from "./otp.js";
import type { PasswordSignIn } from "./password-sign-in.js";
import type { Profiles } from "./profile.js";

export interface AuthDeps {
  keyRing: KeyRing;
  mailer: Mailer;
  otp: OtpSignIn;
  passwords: PasswordSignIn;
  profiles: Profiles;
  refresh: RefreshRotation;
  sessions: Sessions;
}

const notYet = async (): Promise<never> => {
  throw new ConnectError("not built yet", Code.Unimplemented);
};

const updatableProfileFields = new Set(["display_name"]);

export function authHandlers(deps: AuthDeps): ServiceHandlers<typeof AuthService> {
  return {
    sendOtp: (request, call) => deps.otp.send(request.phoneNumber, call),
    verifyOtp: (request, call) => deps.otp.verify(request.phoneNumber, request.code, request.device!, call),
    register: (request, call) => deps.passwords.register(request, call),
    login: (request, call) => deps.passwords.login(request, call),

    async refreshToken(request, call) {
      return { tokens: await deps.refresh.refresh(request.refreshToken, call) };
    },

    async logout(_request, call) {
      const { subject: userId, sessionId } = call.principal!;
      await deps.sessions.end({
        which: { sessionIds: [sessionId] },
        reason: "logout",
        origin: call,
        audit: () => [{ event: "logout", outcome: "success", userId, sessionId }],
      });
      return {};
    },

    async getProfile(_request, call) {
      return { user: userMessage(await deps.profiles.get(call.principal!.subject)) };
    },

    async updateProfile(request, call) {
      const paths = request.updateMask?.paths ?? [];
      const violations = new Violations();
      if (paths.length === 0) violations.add("update_mask", "name the fields to update, for example display_name");
      for (const path of paths) {
        if (!updatableProfileFields.has(path)) violations.add("update_mask", `"${path}" cannot be updated here`);
      }
      violations.throwIfAny();
      return { user: userMessage(await deps.profiles.setDisplayName(call.principal!.subject, request.user?.displayName ?? "")) };
    },

    async changePassword(request, call) {
      const revoked = await deps.passwords.changePassword(call.principal!, request.currentPassword, request.newPassword, call);
      return { revokedSessionCount: revoked };
    },

    getJwks: async () => ({ keys: deps.keyRing.jwks() }),

    verifyEmail: notYet,
    changeEmail: notYet,
    changePhoneNumber: notYet,
    verifyPhoneNumber: notYet,
    requestPasswordReset: notYet,
    resetPassword: notYet,
    listSecurityEvents: notYet,
  };
}
