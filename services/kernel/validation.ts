import { invalidArgument, type FieldViolation } from "./errors.js";

/** Collects every problem with a request, so one answer names all the fields at fault. */
export class Violations {
  private readonly found: FieldViolation[] = [];

  add(field: string, description: string | undefined): this {
    if (description) this.found.push({ field, description });
    return this;
  }

  throwIfAny(): void {
    if (this.found.length > 0) throw invalidArgument(this.found);
  }
}

/** Control characters other than tab and line breaks: none belongs in a name or an address, and Postgres refuses NUL. */
const controlCharacter = /[\0-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/** Free text: its length in characters (not UTF-16 units), and no control characters. */
export function textProblem(value: string, min: number, max: number): string | undefined {
  if (controlCharacter.test(value)) return "contains a control character";
  const length = [...value].length;
  if (length < min) return min === 1 ? "required" : `at least ${min} characters`;
  if (length > max) return `at most ${max} characters`;
  return undefined;
}

export const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The contract's rule for a service account's name, which is also the audience its tokens carry and a guarded service's name. */
export const serviceNamePattern = /^[a-z][a-z0-9-]{1,62}$/;
