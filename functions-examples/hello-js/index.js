// GET /hello-js/:name answers {"message": "<greeting>, <name>!", "runtime": "js"}.
// The greeting is the `greeting` variable of the manifest.
import { get } from 'kiln:platform/config@0.1.0';

function param(request, name) {
  const params = new URLSearchParams(request.headers.get('kiln-params') ?? '');
  return params.get(name);
}

addEventListener('fetch', (event) =>
  event.respondWith(
    (async () => {
      const greeting = get('greeting') ?? 'Hello';
      const name = param(event.request, 'name') ?? 'world';
      const body = JSON.stringify({ message: `${greeting}, ${name}!`, runtime: 'js' });
      return new Response(body, { headers: { 'content-type': 'application/json' } });
    })(),
  ),
);
