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

/** Length in characters (not UTF-16 units), with a clear description when out of bounds. */
export function lengthProblem(value: string, min: number, max: number): string | undefined {
  const length = [...value].length;
  if (length < min) return min === 1 ? "required" : `at least ${min} characters`;
  if (length > max) return `at most ${max} characters`;
  return undefined;
}

export const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
