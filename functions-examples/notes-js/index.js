// Notes in the app's database, from JavaScript:
//   POST /notes {"text": "..."}  -> 201 {"_id": "...", "text": "...", "at": "<date>"}
//   GET  /notes                  -> every note, oldest first (read page by page)
import { db, KilnError } from '@kiln/sdk';

const notes = db.collection('notes');

function error(status, code, message) {
  return Response.json({ error: { code, message } }, { status });
}

export default {
  async fetch(request) {
    if (request.method === 'POST') {
      const { text } = await request.json();
      if (typeof text !== 'string' || text.length === 0) return error(400, 'invalid_text', 'text is a non-empty string');
      const note = { text, at: new Date() };
      try {
        const _id = await notes.insert(note);
        return Response.json({ _id, ...note }, { status: 201 });
      } catch (err) {
        if (err instanceof KilnError && err.code === 'limit-exceeded') return error(413, err.code, err.message);
        throw err;
      }
    }
    const all = await notes.find().sort({ at: 1, _id: 1 }).toArray();
    return Response.json(all);
  },
};
