import { DeviceType, type Device } from "../../gen/portcullis/v1/common_pb.js";
import { textProblem, type Violations } from "../kernel/validation.js";
import type { DeviceInput } from "../session/sessions.js";

/** Every sign-in names the device it creates a session for. */
export function checkDevice(device: Device | undefined, violations: Violations): DeviceInput {
  if (!device) {
    violations.add("device", "required: the device signing in (device_id, device_type, device_name)");
    return { deviceId: "", deviceType: DeviceType.UNSPECIFIED, deviceName: "" };
  }
  violations.add("device.device_id", textProblem(device.deviceId, 1, 128));
  violations.add("device.device_name", textProblem(device.deviceName, 0, 100));
  if (DeviceType[device.deviceType] === undefined) violations.add("device.device_type", "unknown device type");
  return { deviceId: device.deviceId, deviceType: device.deviceType, deviceName: device.deviceName };
}
