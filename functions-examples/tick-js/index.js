// A JavaScript function with both triggers. Cron triggers and one-off jobs
// call `scheduled`: return to succeed, throw to fail the run (the error's
// message and stack are the run's error). Each run is recorded in `ticks`;
// GET /ticks answers how many.
import { db } from '@kiln/sdk';

const ticks = db.collection('ticks');

export default {
  async scheduled(event) {
    if (event.payload?.fail) {
      throw new Error(`failing on purpose (${event.trigger})`);
    }
    await ticks.insert({ _id: `${event.trigger}-${event.scheduledTime}`, due: new Date(event.scheduledTime) });
    console.log(`tick ${event.trigger} due at ${event.scheduledTime}`);
  },

  async fetch() {
    return Response.json({ ticks: await ticks.count() });
  },
};
