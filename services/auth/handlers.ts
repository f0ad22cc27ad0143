import type { ServiceHandlers } from "../policy/call.js";
import { unimplemented } from "../platform/errors.js";
import type { KeyRing } from "../tokens/key-ring.js";
import { AuthService } from "../../gen/portcullis/v1/auth_service_pb.js";

const signIn = "sign-in flows come with issue #3";

export function authHandlers(keyRing: KeyRing): ServiceHandlers<typeof AuthService> {
  return {
    sendOtp: async () => { throw unimplemented("SendOtp", signIn); },
    verifyOtp: async () => { throw unimplemented("VerifyOtp", signIn); },
    register: async () => { throw unimplemented("Register", signIn); },
    login: async () => { throw unimplemented("Login", signIn); },
    refreshToken: async () => { throw unimplemented("RefreshToken", signIn); },
    logout: async () => { throw unimplemented("Logout", signIn); },
    getProfile: async () => { throw unimplemented("GetProfile", signIn); },
    updateProfile: async () => { throw unimplemented("UpdateProfile", signIn); },
    changePassword: async () => { throw unimplemented("ChangePassword", signIn); },
    getJwks: async () => ({ keys: keyRing.jwks() }),
  };
}
