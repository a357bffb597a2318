// @kiln/client's files against a real Kiln server, started by
// tests/tests/client.rs with buckets `docs` (owner only) and `public`.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createClient, KilnClientError } from '../dist/index.js';

const url = process.env.KILN_APP_URL;
assert.ok(url, 'KILN_APP_URL is set by the Rust test');
const password = 'correct horse battery';
const MiB = 1024 * 1024;

async function signedUp(name, options = {}) {
  const client = createClient(url, options);
  const email = `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`;
  const session = await client.auth.signUp({ email, password });
  return { client, id: session.user.id };
}

const sha256 = async (blob) => createHash('sha256').update(new Uint8Array(await blob.arrayBuffer())).digest('hex');

async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof KilnClientError, `${err}`);
    return err;
  }
  assert.fail('expected a refusal');
}

test('put, head, download a range, list and delete under the owner rule', async () => {
  const { client, id } = await signedUp('files');
  const info = await client.files.put('docs', `${id}/notes/a.txt`, 'hello, files', { contentType: 'text/plain' });
  assert.equal(info.size, 12);
  assert.equal(info.key, `${id}/notes/a.txt`);
  await client.files.put('docs', `${id}/notes/b.txt`, new Uint8Array([1, 2, 3]));

  const head = await client.files.head('docs', `${id}/notes/a.txt`);
  assert.equal(head.size, 12);
  assert.equal(head.etag, info.etag);
  assert.equal(await client.files.head('docs', `${id}/notes/none.txt`), null);
  assert.equal(await (await client.files.download('docs', `${id}/notes/a.txt`)).text(), 'hello, files');
  assert.equal(await (await client.files.download('docs', `${id}/notes/a.txt`, { start: 7, end: 10 })).text(), 'file');
  assert.equal((await client.files.open('docs', `${id}/notes/a.txt`, { ifNoneMatch: info.etag })).status, 304);

  const first = await client.files.list('docs', { prefix: `${id}/notes/`, limit: 1 });
  assert.deepEqual(first.files.map((f) => f.key), [`${id}/notes/a.txt`]);
  const second = await client.files.list('docs', { prefix: `${id}/notes/`, cursor: first.cursor, limit: 1 });
  assert.deepEqual(second.files.map((f) => f.key), [`${id}/notes/b.txt`]);

  const other = await signedUp('other');
  const denied = await refusal(other.client.files.download('docs', `${id}/notes/a.txt`));
  assert.equal(denied.status, 403);
  assert.equal(denied.code, 'file_access_denied');
  assert.equal((await refusal(other.client.files.put('docs', `${id}/x`, 'no'))).code, 'file_access_denied');

  await client.files.delete('docs', `${id}/notes/a.txt`);
  assert.equal((await refusal(client.files.download('docs', `${id}/notes/a.txt`))).code, 'file_not_found');
  assert.equal((await refusal(client.files.put('docs', `${id}/notes/b.txt`, 'x', { ifAbsent: true }))).code, 'file_exists');
});

test('an upload given up after its first chunk is continued from its id by a new client', async () => {
  const { client, id } = await signedUp('resume');
  const data = new Blob([randomBytes(20 * MiB)], { type: 'application/octet-stream' });
  const key = `${id}/big.bin`;
  const stop = new AbortController();
  let uploadId = null;
  const err = await client.files
    .upload('docs', key, data, {
      signal: stop.signal,
      onProgress: (p) => {
        uploadId = p.uploadId;
        if (p.loaded > 0) stop.abort();
      },
    })
    .then(() => null, (e) => e);
  assert.ok(err, 'the aborted upload must not finish');
  assert.ok(uploadId);
  assert.equal((await client.files.head('docs', key)), null, 'nothing is stored before the last byte');
  const state = await client.files.uploadState(uploadId);
  assert.equal(state.offset, 8 * MiB, 'one chunk of the part size was confirmed');

  // As after a page load: another client object, same user, the saved id.
  const later = createClient(url, { store: { load: () => client.auth.current(), save: () => {} } });
  const seen = [];
  const info = await later.files.upload('docs', key, data, { uploadId, onProgress: (p) => seen.push(p.loaded) });
  assert.equal(seen[0], 8 * MiB, 'continued where it stopped, not from 0');
  assert.deepEqual(seen, [8 * MiB, 16 * MiB, 20 * MiB]);
  assert.equal(info.size, 20 * MiB);
  assert.equal(await sha256(await client.files.download('docs', key)), await sha256(data));
  assert.equal((await refusal(client.files.uploadState(uploadId))).code, 'upload_not_found');
});

test('a request cut off mid-chunk is retried from the offset the server confirmed', async () => {
  let cut = 0;
  // Sends the first PATCH's first half, then fails the stream, as a dropped connection would.
  const flaky = async (input, init = {}) => {
    if (init.method === 'PATCH' && cut === 0) {
      cut += 1;
      const half = init.body.subarray(0, init.body.length / 2);
      const body = new ReadableStream({
        start(controller) {
          controller.enqueue(half);
          setTimeout(() => controller.error(new Error('connection lost')), 300);
        },
      });
      await fetch(input, { ...init, body, duplex: 'half' }).catch(() => null);
      throw new TypeError('fetch failed');
    }
    return fetch(input, init);
  };
  const { client, id } = await signedUp('flaky', { fetch: flaky });
  const data = new Blob([randomBytes(12 * MiB)]);
  const info = await client.files.upload('docs', `${id}/flaky.bin`, data);
  assert.equal(cut, 1);
  assert.equal(info.size, 12 * MiB);
  assert.equal(await sha256(await client.files.download('docs', `${id}/flaky.bin`)), await sha256(data));
});

test('signed URLs work without a token; a tampered one is refused', async () => {
  const { client, id } = await signedUp('signed');
  await client.files.put('docs', `${id}/private.txt`, 'secret', { contentType: 'text/plain' });
  const get = await client.files.signedUrl('docs', `${id}/private.txt`, { expiresIn: 60 });
  assert.ok(get.url.startsWith(url), get.url);
  assert.ok(get.expires_at > Date.now() / 1000);
  const answer = await fetch(get.url);
  assert.equal(answer.status, 200);
  assert.equal(await answer.text(), 'secret');
  assert.equal((await fetch(client.files.url('docs', `${id}/private.txt`))).status, 401, 'no token, no signature');
  const tampered = await fetch(get.url.replace(/signature=./, (s) => s.slice(0, -1) + (s.endsWith('A') ? 'B' : 'A')));
  assert.equal(tampered.status, 403);
  assert.equal((await tampered.json()).error.code, 'invalid_signature');

  const put = await client.files.signedUrl('docs', `${id}/dropped.txt`, { method: 'PUT', expiresIn: 60 });
  const stored = await fetch(put.url, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'via a signed URL' });
  assert.equal(stored.status, 201);
  assert.equal(await (await client.files.download('docs', `${id}/dropped.txt`)).text(), 'via a signed URL');
});
