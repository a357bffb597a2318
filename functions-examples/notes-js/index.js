// Notes in the app's database, from JavaScript:
//   POST /notes {"text": "..."}  -> 201 {"_id": "...", "text": "..."}
//   GET  /notes                  -> the notes, oldest first
import { insert, find } from 'kiln:platform/database@0.1.0';

function json(body, status = 200) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

function error(status, code, message) {
  return json({ error: { code, message } }, status);
}

async function handle(request) {
  try {
    if (request.method === 'POST') {
      const { text } = await request.json();
      if (typeof text !== 'string' || text.length === 0) return error(400, 'invalid_text', 'text is a non-empty string');
      const id = insert('notes', JSON.stringify({ text, at: { $date: new Date().toISOString() } }));
      return json({ _id: id, text }, 201);
    }
    const page = find('notes', '{}', { sort: '{"at": 1}', batchSize: 1000 });
    return json(page.documents.map((d) => JSON.parse(d)));
  } catch (e) {
    // A database error arrives as {tag, val}: the variant case and its message.
    const tag = e?.payload?.tag ?? 'unexpected';
    return error(tag === 'invalid-input' ? 400 : 500, tag, String(e?.payload?.val ?? e));
  }
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
