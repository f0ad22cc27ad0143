import type { ServiceHandlers } from "../kernel/call.js";
import { decodeExactPageToken, pageSizeOf } from "../kernel/pagination.js";
import { Violations } from "../kernel/validation.js";
import type { RefreshRotation } from "../session/refresh.js";
import type { Sessions } from "../session/sessions.js";
import type { KeyRing } from "../tokens/key-ring.js";
import { userMessage } from "../users/user.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";
import type { ContactChanges } from "./contact-change.js";
import type { EmailVerifications } from "./email-verification.js";
import type { OtpSignIn } from "./otp.js";
import type { PasswordResets } from "./password-reset.js";
import type { PasswordSignIn } from "./password-sign-in.js";
import type { Profiles } from "./profile.js";
import type { Registration } from "./registration.js";
import type { SecurityEvents } from "./security-events.js";

export interface AuthDeps {
  contactChanges: ContactChanges;
  emailVerifications: EmailVerifications;
  keyRing: KeyRing;
  otp: OtpSignIn;
  passwords: PasswordSignIn;
  passwordResets: PasswordResets;
  profiles: Profiles;
  refresh: RefreshRotation;
  registration: Registration;
  securityEvents: SecurityEvents;
  sessions: Sessions;
}

const updatableProfileFields = new Set(["display_name"]);

export function authHandlers(deps: AuthDeps): ServiceHandlers<typeof AuthService> {
  return {
    sendOtp: (request, call) => deps.otp.send(request.phoneNumber, call),
    verifyOtp: (request, call) => deps.otp.verify(request.phoneNumber, request.code, request.device!, call),
    register: (request, call) => deps.registration.register(request, call),
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

    async verifyEmail(request, call) {
      return { email: await deps.emailVerifications.verify(request, call) };
    },

    changeEmail: (request, call) => deps.contactChanges.changeEmail(call.principal!, request, call),
    changePhoneNumber: (request, call) => deps.contactChanges.changePhoneNumber(call.principal!, request, call),
    verifyPhoneNumber: (request, call) => deps.contactChanges.verifyPhoneNumber(call.principal!, request.code, call),

    async requestPasswordReset(request, call) {
      await deps.passwordResets.request(request.email, call);
      return {};
    },

    async resetPassword(request, call) {
      return { revokedSessionCount: await deps.passwordResets.reset(request, call) };
    },

    async listSecurityEvents(request, call) {
      const after = request.pageToken ? decodeExactPageToken(request.pageToken, "bigint") : undefined;
      return deps.securityEvents.list(call.principal!.subject, pageSizeOf(request.pageSize), after);
    },
  };
}
