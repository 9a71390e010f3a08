/**
 * The one error factory (as sharp's): bad input — a file, a tensor in it, a config, a setting — throws an
 * InputError whose message is `${source}: ${problem}`; both parts stay fields for callers that handle it.
 * Its name stays 'Error', so printed errors read as they always have; `instanceof InputError` tells it apart.
 */

export class InputError extends Error {
  /** `source`: what is wrong (a file path, `file: tensor 'x'`, "invalid model config"); `problem`: how. */
  constructor(readonly source: string, readonly problem: string, options?: ErrorOptions) {
    super(`${source}: ${problem}`, options);
  }
}

/** Throws an InputError (an expression, so `x ?? fail(source, '...')` works). */
export function fail(source: string, problem: string, options?: ErrorOptions): never {
  throw new InputError(source, problem, options);
}

/** `fail` bound to one source, for a reader or validator that reports many problems of the same thing. */
export function failFor(source: string): (problem: string) => never {
  return (problem) => fail(source, problem);
}
