// A JavaScript scheduled function. Cron triggers and one-off jobs call
// `scheduledHandler.run`: return to succeed, throw a string (the error) to
// fail the run. `scheduledMs` and `startedMs` are BigInts (milliseconds).
// It records each run in the `ticks` collection; GET answers how many.
import { count, insert } from 'kiln:platform/database@0.1.0';

export const scheduledHandler = {
  run(invocation) {
    const payload = JSON.parse(invocation.payload);
    if (payload && payload.fail) {
      throw `failing on purpose (${invocation.trigger})`;
    }
    const id = `${invocation.trigger}-${invocation.scheduledMs}`;
    insert('ticks', JSON.stringify({ _id: id, due: Number(invocation.scheduledMs) }));
    console.log(`tick ${invocation.trigger} due at ${invocation.scheduledMs}`);
  },
};

addEventListener('fetch', (event) =>
  event.respondWith(
    new Response(JSON.stringify({ ticks: Number(count('ticks', '{}')) }), {
      headers: { 'content-type': 'application/json' },
    }),
  ),
);
