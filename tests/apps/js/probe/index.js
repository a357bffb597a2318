// Exercises @kiln/sdk for tests/tests/javascript.rs; each route answers
// what the SDK handed the function, so the test sees it as the user does.
import { auth, db, KilnError, scheduler, storage } from '@kiln/sdk';

const items = db.collection('items');

const routes = {
  // Writes a note of tests/tests/data_api.rs's `notes` through its hooks.
  async hooked(request) {
    const notes = db.collection('notes').withHooks();
    const created = await notes.create({ title: 'Hooked', owner: 'a function' });
    const updated = await notes.update(created._id, { $set: { title: 'Rehooked' } });
    let refused = null;
    try {
      await notes.create({ title: 'refuse' });
    } catch (err) {
      refused = { code: err.code, message: err.message };
    }
    const plain = await db.collection('notes').insert({ title: 'plain' });
    return { created, updated, refused, plain };
  },

  // The app's files: whole-file calls, metadata as the SDK shapes it, a listing in pages, a refused key.
  async files() {
    const put = await storage.put('notes/a.txt', 'hello from js', { contentType: 'text/plain' });
    const text = await storage.getText('notes/a.txt');
    const head = await storage.head('notes/a.txt');
    const missing = await storage.head('notes/none.txt');
    await storage.copy('notes/a.txt', 'notes/b.txt');
    const bytes = await storage.get('notes/b.txt');
    const first = await storage.list('notes/', { limit: 1 });
    const second = await storage.list('notes/', { cursor: first.cursor, limit: 1 });
    let bad = null;
    try {
      await storage.put('a//b', 'x');
    } catch (err) {
      bad = { isKilnError: err instanceof KilnError, code: err.code };
    }
    return {
      size: put.size,
      sizeType: typeof put.size,
      contentType: put.contentType,
      modifiedIsDate: put.modified instanceof Date,
      text,
      sameEtag: head.etag === put.etag,
      missing,
      copiedBytes: bytes instanceof Uint8Array ? bytes.length : -1,
      pages: [first.files.map((f) => f.key), second.files.map((f) => f.key), second.cursor],
      bad,
      deleted: [await storage.delete('notes/b.txt'), await storage.delete('notes/b.txt')],
    };
  },
  // A file streamed in pieces, read back by a reader and a range; a conditional create and a cap refused.
  async stream() {
    const piece = new Uint8Array(100_000).map((_, i) => i % 251);
    const writer = await storage.write('big/a.bin', { contentType: 'application/x-test' });
    for (let i = 0; i < 30; i += 1) await writer.write(piece);
    await writer.write('tail');
    const written = await writer.finish();
    const reader = await storage.read('big/a.bin');
    let total = 0;
    let chunks = 0;
    let mismatches = 0;
    let last = null;
    for await (const chunk of reader) {
      for (const at of [0, chunk.length - 1]) {
        const offset = total + at;
        if (offset < 3_000_000 && chunk[at] !== (offset % 100_000) % 251) mismatches += 1;
      }
      total += chunk.length;
      chunks += 1;
      last = chunk;
    }
    const range = await storage.read('big/a.bin', { start: 250, end: 253 });
    const ranged = [];
    for await (const chunk of range) ranged.push(...chunk);
    const refusal = async (run) => {
      try {
        await run();
        return null;
      } catch (err) {
        return err instanceof KilnError ? err.code : String(err);
      }
    };
    const conflict = await refusal(async () => {
      const again = await storage.write('big/a.bin', { ifAbsent: true });
      await again.write('x');
      await again.finish();
    });
    const over = await refusal(async () => {
      const capped = await storage.write('big/capped.bin', { maxBytes: 1000 });
      await capped.write(piece);
      await capped.finish();
    });
    return {
      size: written.size,
      readerSize: reader.size,
      contentType: reader.contentType,
      total,
      manyChunks: chunks > 1,
      mismatches,
      tail: new TextDecoder().decode(last.subarray(last.length - 4)),
      ranged,
      conflict,
      over,
      cappedLeft: await storage.head('big/capped.bin'),
    };
  },
  // `mib` MiB written in 64 KiB pieces; `head` answers whether it was stored.
  async passthrough(request) {
    const params = new URL(request.url).searchParams;
    if (params.has('head')) return { stored: await storage.head('big/pass.bin') };
    const piece = new Uint8Array(64 * 1024).fill(7);
    const writer = await storage.write('big/pass.bin');
    for (let i = 0; i < Number(params.get('mib')) * 16; i += 1) await writer.write(piece);
    return { size: (await writer.finish()).size };
  },
  // The file as the response's body, streamed.
  async serve() {
    const file = await storage.read('big/a.bin');
    return new Response(file.stream(), { headers: { 'content-type': file.contentType, 'x-size': String(file.size) } });
  },
  // A Date stored, read back by get, find and findOneAndUpdate, and compared in a filter.
  async dates() {
    const at = new Date('2026-01-02T03:04:05.678Z');
    const _id = await items.insert({ at, nested: { at }, list: [at], n: 7 });
    const got = await items.get(_id);
    const found = await items.find({ at: { $gte: new Date('2026-01-01T00:00:00Z') } }).toArray();
    const updated = await items.findOneAndUpdate({ _id }, { $set: { later: new Date(at.getTime() + 1000) } });
    return {
      get: got.at instanceof Date && got.nested.at instanceof Date && got.list[0] instanceof Date,
      iso: got.at.toISOString(),
      found: found.length,
      later: updated.later instanceof Date ? updated.later.toISOString() : String(updated.later),
      n: got.n,
      nType: typeof got.n,
      count: await items.count({ at }),
    };
  },
  // A unique index violated: the error the function catches.
  async conflict() {
    const users = db.collection('users');
    await users.createIndex({ email: 1 }, { unique: true });
    await users.insert({ email: 'a@example.com' });
    try {
      await users.insert({ email: 'a@example.com' });
      return { caught: false };
    } catch (err) {
      return { caught: true, isKilnError: err instanceof KilnError, name: err.name, code: err.code, message: err.message };
    }
  },
  // An operator outside the subset.
  async invalid() {
    try {
      await items.find({ $where: 'true' }).toArray();
      return { caught: false };
    } catch (err) {
      return { caught: true, isKilnError: err instanceof KilnError, code: err.code };
    }
  },
  // 250 documents read through the cursor in pages of 100.
  async cursor() {
    const seq = db.collection('seq');
    await seq.drop();
    await seq.insertMany(Array.from({ length: 250 }, (_, i) => ({ i })));
    let seen = 0;
    let last = -1;
    let ordered = true;
    for await (const doc of seq.find({}).sort({ i: 1 })) {
      ordered &&= doc.i === last + 1;
      last = doc.i;
      seen += 1;
    }
    const sizes = [];
    for await (const page of seq.find({ i: { $gte: 10 } }).batchSize(100).pages()) sizes.push(page.documents.length);
    const skipped = await seq.find({}).sort({ i: -1 }).skip(5).limit(3).project({ i: 1, _id: 0 }).toArray();
    return { seen, ordered, sizes, skipped, count: await seq.count() };
  },
  // A one-off job that fails with an Error (the `scheduled` handler below).
  async job(request) {
    const { when } = await request.json();
    return { id: await scheduler.schedule('probe', when === 'date' ? new Date(Date.now() + 50) : 50, { fail: true, at: new Date() }) };
  },
  async context(request, env, ctx) {
    return { params: ctx.params, route: ctx.route, requestId: ctx.requestId, greeting: env.greeting, keys: Object.keys(env) };
  },
  // The verified caller, and users managed from the function.
  async whoami() {
    const caller = await auth.currentUser();
    if (!caller) return { caller: null };
    const again = await auth.findUserByEmail(caller.user.email.toUpperCase());
    let conflict;
    try {
      await auth.createUser({ email: caller.user.email, password: 'long enough password' });
    } catch (err) {
      conflict = { isKilnError: err instanceof KilnError, code: err.code };
    }
    const created = await auth.createUser({ email: `made-${Date.now()}@example.com`, password: 'long enough password', data: { by: 'js' } });
    const promoted = await auth.setRoles(created.id, ['editor']);
    return {
      caller: { ...caller, createdAtIsDate: caller.user.createdAt instanceof Date },
      sameUser: again?.id === caller.user.id,
      conflict,
      created: { data: created.data, roles: promoted.roles, anonymous: created.anonymous },
    };
  },
  async throws() {
    throwSomething();
  },
};

function throwSomething() {
  throw new Error('thrown on purpose');
}

export default {
  async fetch(request, env, ctx) {
    const route = routes[ctx.params.what];
    if (!route) return Response.json({ error: 'no such probe' }, { status: 404 });
    const answer = await route(request, env, ctx);
    return answer instanceof Response ? answer : Response.json(answer);
  },

  // The rule of tests/tests/files_api.rs's bucket `ruled`: only `true` allows.
  async fileRule({ action, key, user, contentType, size }) {
    if (key.startsWith('trap/')) throw new Error('the rule failed on purpose');
    if (key.startsWith('silent/')) return new Promise(() => {});
    if (key.startsWith('spin/')) for (;;);
    if (action === 'read') return key.startsWith('shared/') || (user?.roles.includes('editor') ?? false);
    if (action === 'upload') {
      const fine = user !== null && contentType === 'text/plain' && size !== null && size <= 100;
      return fine || { allow: false, reason: 'signed-in users store text of up to 100 bytes' };
    }
    if (action === 'delete') return 'yes';
    return false;
  },

  // The hooks of tests/tests/data_api.rs's collection `notes`.
  async beforeWrite(event) {
    const title = event.document?.title;
    if (title === 'refuse') return { refuse: { status: 400, code: 'title_taken', message: 'that title is taken' } };
    if (title === 'trap') throw new Error('the hook failed on purpose');
    if (title === 'spin') for (;;);
    if (event.action === 'delete' && event.before?.title === 'keep') {
      return { refuse: { code: 'kept', message: 'this note is kept' } };
    }
    if (event.document && typeof title === 'string') return { document: { ...event.document, slug: title.toLowerCase() } };
  },

  async afterWrite(event) {
    const title = (event.after ?? event.before)?.title;
    if (title === 'flaky') {
      const tries = await db.collection('marks').findOneAndUpdate({ _id: `tries-${event.id}` }, { $inc: { n: 1 } }, { upsert: true });
      if (tries.n < 2) throw new Error('the first attempt fails on purpose');
    }
    if (title === 'slow') {
      const until = Date.now() + 1500;
      while (Date.now() < until);
    }
    let nested = null;
    if (title === 'nested') {
      try {
        await db.collection('notes').withHooks().create({ title: 'from a hook' });
      } catch (err) {
        nested = err.code;
      }
    }
    await db.collection('marks').update(
      { _id: `${event.action}-${event.id}` },
      { $inc: { runs: 1 }, $set: { before: event.before, after: event.after, user: event.user?.id ?? null, nested } },
      { upsert: true },
    );
  },

  async collectionRule({ action, document, new: proposed, user }) {
    if (action === 'get') return document?.shared === true || (user?.roles.includes('editor') ?? false);
    if (action === 'list') return user?.roles.includes('reader') ?? false;
    if (action === 'create') return proposed?.ok === true;
    if (action === 'update') return document?.ok === true && proposed?.ok === true;
    if (action === 'delete') return document?.ok === true;
    return false;
  },

  async scheduled(event) {
    if (event.payload?.fail) {
      throw new Error(`job failed on purpose; the payload's date came back as a ${event.payload.at?.constructor?.name}`);
    }
  },
};
