import type { PortcullisClient } from "../client/index.js";
import { DeviceType, KycStatus, SignInMethod } from "../gen/portcullis/v1/common_pb.js";
import { withStepUp } from "./second-factor.js";
import { button, element, formatTime, inputValue, listItem, onClick, onSubmit, say } from "./ui.js";

export interface AccountScreen {
  client: PortcullisClient;
  onError(error: unknown): void;
}

const deviceTypes: Record<DeviceType, string> = {
  [DeviceType.UNSPECIFIED]: "device",
  [DeviceType.IOS]: "iOS app",
  [DeviceType.ANDROID]: "Android app",
  [DeviceType.WEB]: "web browser",
  [DeviceType.DESKTOP]: "desktop app",
  [DeviceType.OTHER]: "other device",
};
const signInMethods: Record<SignInMethod, string> = {
  [SignInMethod.UNSPECIFIED]: "signed in",
  [SignInMethod.OTP]: "signed in with a phone code",
  [SignInMethod.PASSWORD]: "signed in with a password",
  [SignInMethod.PASSKEY]: "signed in with a passkey",
};
const kycStatuses: Record<KycStatus, string> = {
  [KycStatus.UNSPECIFIED]: "",
  [KycStatus.NONE]: "Nothing submitted",
  [KycStatus.PENDING]: "Waiting for review",
  [KycStatus.APPROVED]: "Approved",
  [KycStatus.REJECTED]: "Rejected: check your details and submit again",
};

/** The signed-in screen: profile, devices, identity verification and passkeys. */
export function setUpAccount(screen: AccountScreen): { load(): Promise<void> } {
  const { client, onError } = screen;

  async function loadProfile() {
    const { user } = await client.auth.getProfile({});
    element("profile-name").textContent = user?.displayName || "—";
    element("profile-phone").textContent = user?.phoneNumber || "—";
    element("profile-email").textContent = user?.email ? `${user.email}${user.emailVerified ? "" : " (not verified)"}` : "—";
    element<HTMLInputElement>("display-name").value = user?.displayName ?? "";
  }

  async function loadDevices() {
    const { sessions } = await client.sessions.listSessions({});
    const items = sessions.map((session) => {
      const item = listItem(
        [
          `${session.device?.deviceName || "Unnamed device"}${session.current ? " (this device)" : ""}`,
          `${deviceTypes[session.device?.deviceType ?? DeviceType.UNSPECIFIED] ?? "device"}, ${signInMethods[session.signInMethod] ?? "signed in"}`,
          `Last active ${formatTime(session.lastActiveTime)}`,
        ],
        { sessionId: session.sessionId, ...(session.current ? { current: "true" } : {}) },
      );
      const signOut = button("Sign out", "sign-out-device secondary");
      onClick(signOut, () => signOutDevice(session.sessionId, session.current), onError);
      item.append(signOut);
      return item;
    });
    element("devices").replaceChildren(...items);
  }

  async function signOutDevice(sessionId: string, current: boolean) {
    // The client's onSessionEnd shows the sign-in screen.
    if (current) return client.signOut();
    await client.sessions.revokeSession({ sessionId });
    say("That device has been signed out.");
    await loadDevices();
  }

  async function loadKyc() {
    const status = await client.kyc.getKycStatus({});
    element("kyc-level").textContent = String(status.kycLevel);
    element("kyc-status").textContent = kycStatuses[status.kycStatus] ?? "";
    element("kyc-form").hidden = status.nextLevel !== 1 || status.kycStatus === KycStatus.PENDING;
  }

  async function loadPasskeys() {
    const { passkeys } = await client.passkeys.listPasskeys({});
    const items = passkeys.map((passkey) => {
      const item = listItem(
        [passkey.name, `${passkey.synced ? "Synced" : "On one device"}, added ${formatTime(passkey.createTime)}, last used ${formatTime(passkey.lastUseTime)}`],
        { passkeyId: passkey.id },
      );
      const remove = button("Delete", "delete-passkey secondary");
      onClick(remove, async () => {
        await withStepUp(client, () => client.passkeys.deletePasskey({ passkeyId: passkey.id }));
        say("The passkey has been deleted.");
        await loadPasskeys();
      }, onError);
      item.append(remove);
      return item;
    });
    element("passkeys").replaceChildren(...items);
  }

  onSubmit("profile-form", async () => {
    await client.auth.updateProfile({ user: { displayName: inputValue("display-name") }, updateMask: { paths: ["display_name"] } });
    await loadProfile();
    say("Your profile has been saved.");
  }, onError);

  onClick(element("refresh-devices"), loadDevices, onError);

  onSubmit("kyc-form", async () => {
    const identity = {
      legalName: inputValue("kyc-legal-name"),
      birthDate: inputValue("kyc-birth-date"),
      nationality: inputValue("kyc-nationality").toUpperCase(),
      address: {
        addressLines: [inputValue("kyc-address-line"), inputValue("kyc-address-line-2")].filter((line) => line !== ""),
        locality: inputValue("kyc-locality"),
        administrativeArea: inputValue("kyc-administrative-area"),
        postalCode: inputValue("kyc-postal-code"),
        regionCode: inputValue("kyc-region-code").toUpperCase(),
      },
    };
    await withStepUp(client, () => client.kyc.submitBasicKyc({ identity }));
    await loadKyc();
    say("Your details have been sent for review.");
  }, onError);

  onSubmit("passkey-form", async () => {
    const currentPassword = element<HTMLInputElement>("passkey-password").value;
    await withStepUp(client, () => client.registerPasskey({ name: inputValue("passkey-name"), currentPassword }));
    element<HTMLInputElement>("passkey-name").value = "";
    element<HTMLInputElement>("passkey-password").value = "";
    await loadPasskeys();
    say("The passkey has been added.");
  }, onError);

  onClick(element("sign-out"), () => client.signOut(), onError);

  return {
    /** Each part on its own: one that fails leaves the others shown. */
    async load() {
      const results = await Promise.allSettled([loadProfile(), loadDevices(), loadKyc(), loadPasskeys()]);
      const failed = results.find((result) => result.status === "rejected");
      if (failed) throw failed.reason;
    },
  };
}
