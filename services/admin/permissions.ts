import { sessionAdminPermission } from "../session/sessions.js";

/**
 * Permissions that mean something to Portcullis, as the contract lists them
 * for GrantPermission and RevokePermission (a test holds the two together);
 * anything else is a typo.
 */
export const knownPermissions: readonly string[] = ["user.admin", "audit.read", sessionAdminPermission, "kyc.review", "service.admin"];
