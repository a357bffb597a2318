// @kiln/client against a real Kiln server, started by tests/tests/client.rs
// with the `accounts` example deployed at KILN_APP_URL (cheap argon2).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClient, KilnClientError } from '../dist/index.js';

const url = process.env.KILN_APP_URL;
assert.ok(url, 'KILN_APP_URL is set by the Rust test');
const password = 'correct horse battery';
const unique = (name) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`;

test('sign up, call a user route with the token, sign out', async () => {
  const client = createClient(url);
  const email = unique('ada');
  const session = await client.auth.signUp({ email, password, data: { name: 'Ada' } });
  assert.equal(session.user.email, email);
  const me = await client.fetch('/me');
  assert.equal(me.status, 200);
  assert.equal((await me.json()).user.email, email);
  assert.equal((await client.auth.user()).data.name, 'Ada');
  await client.auth.signOut();
  assert.equal(await client.auth.current(), null);
  assert.equal((await client.fetch('/me')).status, 401);
});

test('concurrent calls share one refresh, so rotation never looks like reuse', async () => {
  const email = unique('bob');
  await createClient(url).auth.signUp({ email, password });
  // A margin past the token's lifetime: every call refreshes first.
  const client = createClient(url, { refreshMargin: 10_000 });
  const signedIn = await client.auth.signIn({ email, password });
  const changes = [];
  client.auth.onChange((s) => changes.push(s?.refresh_token));
  const answers = await Promise.all(Array.from({ length: 5 }, () => client.fetch('/me')));
  assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200, 200]);
  assert.equal(changes.length, 1, 'one refresh for five calls');
  assert.notEqual(changes[0], signedIn.refresh_token);
  // The session survived (a reused token would have revoked it).
  assert.equal((await client.fetch('/me')).status, 200);
});

test('errors carry the stable code; sessions can be listed and revoked', async () => {
  const email = unique('carol');
  const first = createClient(url);
  await first.auth.signUp({ email, password });
  await assert.rejects(createClient(url).auth.signIn({ email, password: 'wrong password' }), (err) => {
    assert.ok(err instanceof KilnClientError);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_credentials');
    return true;
  });
  const second = createClient(url);
  await second.auth.signIn({ email, password });
  const sessions = await first.auth.sessions();
  assert.equal(sessions.length, 2);
  const other = sessions.find((s) => !s.current);
  await first.auth.revokeSession(other.id);
  // The revoked client's next call fails, and refreshing cannot revive it.
  assert.equal((await second.fetch('/me')).status, 401);
  assert.equal(await second.auth.current(), null);
});

test('a redirect fragment becomes a session', async () => {
  const email = unique('dan');
  const tokens = await createClient(url).auth.signUp({ email, password });
  const fragment = new URLSearchParams({
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    expires_at: String(tokens.expires_at),
    session_id: tokens.session_id,
    token_type: 'bearer',
  });
  const client = createClient(url);
  const session = await client.auth.handleRedirect(`https://app.example/signed-in#${fragment}`);
  assert.equal(session.user.email, email);
  assert.equal((await client.fetch('/me')).status, 200);
  assert.match(client.auth.redirectUrl({ provider: 'google', redirectTo: 'https://app.example/signed-in' }),
    /\/_kiln\/auth\/oidc\/google\/start\?redirect_to=https%3A%2F%2Fapp\.example%2Fsigned-in$/);
});
