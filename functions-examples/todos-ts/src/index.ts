// A todo list in TypeScript, validated with zod: the JS twin of `todo-api`.
//   GET    /todos-ts[?done=true|false]  the todos, oldest first
//   POST   /todos-ts {"title", "done"?} 201 and the new todo
//   GET    /todos-ts/:id                404 when there is none
//   PATCH  /todos-ts/:id {"title"?, "done"?}
//   DELETE /todos-ts/:id
// A title is 1 to 200 characters; anything else is a 400 with the reason.
import { db, KilnError, type Handlers } from '@kiln/sdk';
import { z } from 'zod';

interface Todo {
  _id?: string;
  title: string;
  done: boolean;
  created: Date;
}

const title = z.string().trim().min(1, 'a title is 1 to 200 characters').max(200, 'a title is 1 to 200 characters');
const NewTodo = z.strictObject({ title, done: z.boolean().default(false) });
const TodoPatch = z
  .strictObject({ title: title.optional(), done: z.boolean().optional() })
  .refine((p) => p.title !== undefined || p.done !== undefined, 'send title and/or done');

const todos = db.collection<Todo>('todos');

function error(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

async function input<T>(request: Request, schema: z.ZodType<T>): Promise<T | Response> {
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    return error(400, 'invalid_body', 'the body is not JSON');
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    return error(400, 'invalid_input', `${where}${issue.message}`);
  }
  return parsed.data;
}

async function route(request: Request, id: string | undefined): Promise<Response> {
  const notFound = () => error(404, 'not_found', `no todo ${id}`);
  switch (`${request.method} ${id === undefined ? 'list' : 'one'}`) {
    case 'GET list': {
      const done = new URL(request.url).searchParams.get('done');
      if (done !== null && done !== 'true' && done !== 'false') return error(400, 'invalid_query', 'done is true or false');
      const filter = done === null ? {} : { done: done === 'true' };
      return Response.json(await todos.find(filter).sort({ created: 1 }).toArray());
    }
    case 'POST list': {
      const fields = await input(request, NewTodo);
      if (fields instanceof Response) return fields;
      const todo: Todo = { ...fields, created: new Date() };
      todo._id = await todos.insert(todo);
      return Response.json(todo, { status: 201 });
    }
    case 'GET one': {
      const todo = await todos.get(id!);
      return todo ? Response.json(todo) : notFound();
    }
    case 'PATCH one': {
      const fields = await input(request, TodoPatch);
      if (fields instanceof Response) return fields;
      const todo = await todos.findOneAndUpdate({ _id: id }, { $set: fields });
      return todo ? Response.json(todo) : notFound();
    }
    case 'DELETE one':
      return (await todos.delete({ _id: id })) === 1 ? new Response(null, { status: 204 }) : notFound();
    default:
      return error(405, 'method_not_allowed', 'not a todo operation');
  }
}

export default {
  async fetch(request, _env, ctx) {
    try {
      return await route(request, ctx.params.id);
    } catch (err) {
      if (err instanceof KilnError && err.code === 'invalid-input') return error(400, 'invalid_input', err.message);
      if (err instanceof KilnError && err.code === 'conflict') return error(409, 'conflict', err.message);
      throw err;
    }
  },
} satisfies Handlers;
