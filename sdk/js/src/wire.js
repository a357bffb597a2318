// The JSON text that crosses the WIT boundary. Users see plain objects with
// `Date` values; the wire carries `{"$date": "<RFC 3339>"}`.
import { invalidInput } from './errors.js';

/** Plain value (Dates included) to JSON text. */
export function encode(value, what) {
  try {
    return JSON.stringify(value, function replace(key, v) {
      const raw = this[key];
      if (raw instanceof Date) {
        if (Number.isNaN(raw.getTime())) throw invalidInput(`${what}: an invalid Date at \`${key}\``);
        return { $date: raw.toISOString() };
      }
      if (typeof raw === 'bigint') {
        if (raw > BigInt(Number.MAX_SAFE_INTEGER) || raw < BigInt(Number.MIN_SAFE_INTEGER)) {
          throw invalidInput(`${what}: the BigInt at \`${key}\` does not fit a JSON number exactly`);
        }
        return Number(raw);
      }
      return v;
    });
  } catch (err) {
    if (err?.name === 'KilnError') throw err;
    throw invalidInput(`${what}: ${err.message}`);
  }
}

/** An object to JSON text: documents, filters and updates are objects. */
export function encodeObject(value, what) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidInput(`${what} must be an object`);
  }
  return encode(value, what);
}

function reviveDate(key, value) {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === '$date' && typeof value.$date === 'string') {
      return new Date(value.$date);
    }
  }
  return value;
}

/** JSON text from the host to a plain value with Dates. */
export function decode(text) {
  return JSON.parse(text, reviveDate);
}

/** A non-negative integer for a u64 parameter. */
export function u64(value, what) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw invalidInput(`${what} must be a non-negative integer, not ${String(value)}`);
  }
  return BigInt(value);
}
