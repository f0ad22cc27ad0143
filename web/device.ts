import { DeviceType } from "../gen/portcullis/v1/common_pb.js";

const deviceIdKey = "portcullis.device-id";

/**
 * This browser as a device for sign-ins: an id made once and kept, so the sessions list and new-device
 * notices recognise it, and a name a person knows it by ("Firefox on Windows").
 */
export function thisDevice() {
  let deviceId = localStorage.getItem(deviceIdKey);
  if (!deviceId) {
    deviceId = crypto.randomUUID();
    localStorage.setItem(deviceIdKey, deviceId);
  }
  return { deviceId, deviceType: DeviceType.WEB, deviceName: deviceName(navigator.userAgent) };
}

/** Order matters: Edge and Opera say "Chrome" too, and Chrome says "Safari". */
const browsers: [RegExp, string][] = [
  [/Edg\//, "Edge"],
  [/OPR\//, "Opera"],
  [/Firefox\//, "Firefox"],
  [/Chrome\//, "Chrome"],
  [/Safari\//, "Safari"],
];
const systems: [RegExp, string][] = [
  [/Android/, "Android"],
  [/iPhone|iPad|iPod/, "iOS"],
  [/Windows/, "Windows"],
  [/Mac OS X|Macintosh/, "macOS"],
  [/CrOS/, "ChromeOS"],
  [/Linux/, "Linux"],
];

function deviceName(userAgent: string): string {
  const browser = browsers.find(([pattern]) => pattern.test(userAgent))?.[1] ?? "Browser";
  const system = systems.find(([pattern]) => pattern.test(userAgent))?.[1];
  return system ? `${browser} on ${system}` : browser;
}
