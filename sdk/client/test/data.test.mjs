// @kiln/client's collections against a real Kiln server, started by
// tests/tests/client.rs with the owner-only collection `todos`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClient, KilnClientError } from '../dist/index.js';

const url = process.env.KILN_APP_URL;
assert.ok(url, 'KILN_APP_URL is set by the Rust test');

async function signedUp(name) {
  const client = createClient(url);
  const email = `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`;
  const session = await client.auth.signUp({ email, password: 'correct horse battery' });
  return { client, id: session.user.id };
}

async function refusal(promise) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof KilnClientError, `${err}`);
    return err;
  }
  assert.fail('expected a refusal');
}

test('create, list in pages, get, update, replace and delete under the owner rule', async () => {
  const { client, id } = await signedUp('todos');
  const todos = client.collection('todos');
  const created = await todos.create({ title: 'first', n: 1 });
  assert.equal(created.owner, id, 'the server fills the owner');
  for (let n = 2; n <= 5; n++) await todos.create({ title: `todo ${n}`, n });

  const page = await todos.list({ sort: { n: -1 }, limit: 2 });
  assert.deepEqual(page.documents.map((d) => d.n), [5, 4]);
  assert.ok(page.cursor);
  const all = [];
  for await (const doc of todos.iterate({ sort: { n: 1 }, limit: 2, filter: { n: { $gte: 2 } } })) all.push(doc.n);
  assert.deepEqual(all, [2, 3, 4, 5]);
  assert.equal(await todos.count({ n: { $lt: 3 } }), 2);

  assert.equal((await todos.get(created._id)).title, 'first');
  const updated = await todos.update(created._id, { $set: { done: true }, $inc: { n: 10 } });
  assert.deepEqual([updated.done, updated.n], [true, 11]);
  const replaced = await todos.replace(created._id, { title: 'again' });
  assert.deepEqual([replaced.title, replaced.owner, replaced.n], ['again', id, undefined]);
  await todos.delete(created._id);
  assert.equal((await refusal(todos.get(created._id))).code, 'document_not_found');
});

test('another user neither sees nor takes a document', async () => {
  const ada = await signedUp('ada');
  const bob = await signedUp('bob');
  const note = await ada.client.collection('todos').create({ title: 'mine' });
  const theirs = bob.client.collection('todos');
  assert.equal((await refusal(theirs.get(note._id))).status, 404);
  assert.equal((await refusal(theirs.update(note._id, { $set: { title: 'taken' } }))).code, 'document_not_found');
  assert.equal((await refusal(theirs.create({ title: 'forged', owner: ada.id }))).code, 'field_not_settable');
  assert.deepEqual((await theirs.list()).documents, []);
  const anonymous = createClient(url).collection('todos');
  assert.equal((await refusal(anonymous.list())).code, 'sign_in_required');
});
