// Errors from the platform: one class with a stable `code`, whatever
// interface raised it. componentize-js throws a WIT `variant error` as an
// Error whose `payload` is `{tag, val}`; the SDK never lets that shape out.

/** The codes a platform call can fail with; they mirror the WIT `error` variants. */
export const ERROR_CODES = Object.freeze([
  'not-found',
  'conflict',
  'invalid-input',
  'permission-denied',
  'limit-exceeded',
  'unavailable',
]);

export class KilnError extends Error {
  /**
   * @param {string} code one of ERROR_CODES
   * @param {string} message
   * @param {ErrorOptions} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = 'KilnError';
    this.code = code;
  }
}

/** Runs a host call, turning its `{tag, val}` failure into a KilnError. */
export function hostCall(what, call) {
  try {
    return call();
  } catch (err) {
    const payload = err?.payload;
    if (payload && typeof payload.tag === 'string') {
      throw new KilnError(payload.tag, `${what}: ${payload.val ?? payload.tag}`);
    }
    throw err;
  }
}

/** A KilnError for a value the SDK refuses before calling the host. */
export function invalidInput(message) {
  return new KilnError('invalid-input', message);
}
