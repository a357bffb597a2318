// One-off runs of a function of the app.
import * as wit from 'kiln:platform/scheduler@0.1.0';
import { hostCall, invalidInput } from './errors.js';
import { encode } from './wire.js';

/** A Date, or a delay in milliseconds from now, as epoch milliseconds. */
function dueAt(when) {
  const ms = when instanceof Date ? when.getTime() : typeof when === 'number' ? Date.now() + when : NaN;
  if (!Number.isSafeInteger(Math.trunc(ms)) || ms < 0) {
    throw invalidInput(`scheduler.schedule: \`when\` is a Date or a delay in milliseconds, not ${String(when)}`);
  }
  return BigInt(Math.trunc(ms));
}

export const scheduler = {
  /** Runs `fn` once at `when` with `payload`; resolves to the job id. */
  async schedule(fn, when, payload = null) {
    const at = dueAt(when);
    const body = encode(payload ?? null, 'scheduler.schedule payload');
    return hostCall(`scheduler.schedule(${JSON.stringify(fn)})`, () => wit.schedule(String(fn), at, body));
  },
  /** Cancels a job that has not started. */
  async cancel(jobId) {
    hostCall(`scheduler.cancel(${JSON.stringify(jobId)})`, () => wit.cancel(String(jobId)));
  },
};
