// Turns a module in the Workers syntax, `export default { fetch, scheduled }`,
// into what the component exports: the wasi:http fetch event and Kiln's
// `scheduled-handler`. `kiln build` generates the module that calls these.
import { lazyEnv } from './config.js';
import { describeError } from './stack.js';
import { decode } from './wire.js';

/**
 * What a fetch handler learns about the route besides the request. Read
 * from the trigger's headers on first use: a header read crosses into the
 * host, and most handlers need one field or none.
 */
class FetchContext {
  #event;
  #params;

  constructor(event) {
    this.#event = event;
  }

  #header(name) {
    return this.#event.request.headers.get(name) ?? undefined;
  }

  get app() {
    return this.#header('kiln-app');
  }

  get route() {
    return this.#header('kiln-route');
  }

  get requestId() {
    return this.#header('kiln-request-id');
  }

  /** Set by the host when it asks rather than a client calls (`file-rule`). */
  get trigger() {
    return this.#header('kiln-trigger');
  }

  get params() {
    this.#params ??= Object.fromEntries(new URLSearchParams(this.#header('kiln-params') ?? ''));
    return this.#params;
  }

  /** Keeps the instance alive until `promise` settles, after the response. */
  waitUntil(promise) {
    this.#event.waitUntil?.(promise);
  }
}

function errorResponse(ctx) {
  const body = {
    error: {
      code: 'function_error',
      message: `the function threw an uncaught exception; its log has the details (request ${ctx.requestId ?? 'unknown'})`,
    },
  };
  return new Response(JSON.stringify(body), { status: 500, headers: { 'content-type': 'application/json' } });
}

/** A bucket rule's question, answered by `handlers.fileRule`; only `true` allows. */
async function decide(handlers, event, ctx) {
  try {
    const asked = await event.request.json();
    const user = asked.user && { id: asked.user.id, sessionId: asked.user.session_id, roles: asked.user.roles, mfa: asked.user.mfa };
    const question = { action: asked.action, bucket: asked.bucket, key: asked.key, user, list: asked.list === true };
    if ('content_type' in asked) Object.assign(question, { contentType: asked.content_type, size: asked.size });
    const verdict = await handlers.fileRule(question, lazyEnv(), ctx);
    const body =
      typeof verdict === 'object' && verdict !== null
        ? { allow: verdict.allow === true, reason: typeof verdict.reason === 'string' ? verdict.reason : undefined }
        : { allow: verdict === true };
    return Response.json(body);
  } catch (err) {
    console.error(`uncaught exception in fileRule: ${describeError(err)}`);
    return errorResponse(ctx);
  }
}

/**
 * The host's questions about collections: `beforeWrite(event)` may return
 * `{document}` to change the write or `{refuse: {status, code, message}}`
 * to refuse it; `afterWrite(event)` runs after the write committed (a throw
 * fails the attempt, which is retried); `collectionRule(question)` allows
 * with `true` or `{allow: true}`.
 */
const HOOKS = { 'before-write': 'beforeWrite', 'after-write': 'afterWrite', 'collection-rule': 'collectionRule' };

async function hook(handlers, name, event, ctx) {
  try {
    const asked = await event.request.json();
    const answer = await handlers[name](asked, lazyEnv(), ctx);
    let body = {};
    if (name === 'collectionRule') {
      body = { allow: answer === true || (typeof answer === 'object' && answer !== null && answer.allow === true) };
    } else if (name === 'beforeWrite' && typeof answer === 'object' && answer !== null) {
      body = answer;
    }
    return Response.json(body);
  } catch (err) {
    console.error(`uncaught exception in ${name}: ${describeError(err)}`);
    return errorResponse(ctx);
  }
}

async function respond(handlers, event, ctx) {
  if (typeof handlers.fileRule === 'function' && ctx.trigger === 'file-rule') return decide(handlers, event, ctx);
  const named = HOOKS[ctx.trigger];
  if (named) {
    if (typeof handlers[named] === 'function') return hook(handlers, named, event, ctx);
    // Never let fetch answer the host's question: that could allow a write.
    console.error(`the host asked ${named}, which this function does not export`);
    return errorResponse(ctx);
  }
  try {
    const response = await handlers.fetch(event.request, lazyEnv(), ctx);
    if (!(response instanceof Response)) {
      throw new TypeError(`fetch must return a Response, not ${response === null ? 'null' : typeof response}`);
    }
    return response;
  } catch (err) {
    console.error(`uncaught exception in fetch: ${describeError(err)}`);
    return errorResponse(ctx);
  }
}

/** Answers fetch events with `handlers.fetch(request, env, ctx)`, and the host's rule questions with `handlers.fileRule`. */
export function serveFetch(handlers) {
  addEventListener('fetch', (event) => event.respondWith(respond(handlers, event, new FetchContext(event))));
}

/**
 * The `scheduled-handler` export for `handlers.scheduled(event, env, ctx)`.
 * A throw fails the run; its message and source stack are the run's error.
 */
export function scheduledExport(handlers) {
  return {
    async run(invocation) {
      if (typeof handlers?.scheduled !== 'function') {
        throw 'this function has no scheduled handler (export default { scheduled(event, env, ctx) {...} })';
      }
      const event = {
        trigger: invocation.trigger,
        scheduledTime: Number(invocation.scheduledMs),
        startedTime: Number(invocation.startedMs),
        payload: decode(invocation.payload),
      };
      const pending = [];
      const ctx = { waitUntil: (promise) => pending.push(promise) };
      try {
        await handlers.scheduled(event, lazyEnv(), ctx);
        await Promise.all(pending);
      } catch (err) {
        throw describeError(err);
      }
    },
  };
}
