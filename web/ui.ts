import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { describeError } from "./errors.js";

/** The page's element with this id; the page is static, so a missing one is a bug caught at start-up. */
export function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

export function inputValue(id: string): string {
  return element<HTMLInputElement>(id).value.trim();
}

const screens = ["loading", "sign-in", "account", "verify-email", "reset-password"] as const;

/** Shows exactly one of the page's screens. */
export function showScreen(id: (typeof screens)[number]): void {
  for (const screen of screens) element(screen).hidden = screen !== id;
}

export function say(message: string): void {
  element("error").hidden = true;
  const notice = element("message");
  notice.textContent = message;
  notice.hidden = message === "";
}

export function showError(error: unknown): void {
  element("message").hidden = true;
  const alert = element("error");
  alert.textContent = describeError(error);
  alert.hidden = false;
}

function clearNotices(): void {
  element("message").hidden = true;
  element("error").hidden = true;
}

/**
 * Runs a form's action on submit, never letting the browser submit it (the page's CSP forbids that anyway),
 * with its buttons disabled meanwhile so a double click sends one request.
 */
export function onSubmit(formId: string, action: () => Promise<void>, onError: (error: unknown) => void): void {
  const form = element<HTMLFormElement>(formId);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(form, action, onError);
  });
}

export function onClick(target: HTMLElement, action: () => Promise<void>, onError: (error: unknown) => void): void {
  target.addEventListener("click", () => void busy(target, action, onError));
}

async function busy(scope: HTMLElement, action: () => Promise<void>, onError: (error: unknown) => void): Promise<void> {
  const buttons = scope instanceof HTMLButtonElement ? [scope] : [...scope.querySelectorAll("button")];
  for (const button of buttons) button.disabled = true;
  try {
    clearNotices();
    await action();
  } catch (error) {
    onError(error);
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

/** A list item of plain text: names come from users and devices, so never as HTML. */
export function listItem(lines: string[], data: Record<string, string>): HTMLLIElement {
  const item = document.createElement("li");
  for (const [key, value] of Object.entries(data)) item.dataset[key] = value;
  const text = document.createElement("div");
  lines.forEach((line, i) => {
    const span = document.createElement("span");
    span.className = i === 0 ? "item-title" : "item-detail";
    span.textContent = line;
    text.append(span);
  });
  item.append(text);
  return item;
}

export function button(label: string, className: string): HTMLButtonElement {
  const made = document.createElement("button");
  made.type = "button";
  made.className = className;
  made.textContent = label;
  return made;
}

export function formatTime(time: Timestamp | undefined): string {
  if (!time) return "never";
  return timestampDate(time).toLocaleString();
}
