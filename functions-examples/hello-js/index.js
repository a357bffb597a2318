// GET /hello-js/:name answers {"message": "<greeting>, <name>!", "runtime": "js"}.
// The greeting is the `greeting` variable of the manifest, read from `env`.
export default {
  async fetch(request, env, ctx) {
    const greeting = env.greeting ?? 'Hello';
    const name = ctx.params.name ?? 'world';
    return Response.json({ message: `${greeting}, ${name}!`, runtime: 'js' });
  },
};
