// Collections the app opens to clients (`[collections.NAME]` in kiln.toml),
// through /_kiln/data with the signed-in user's token. The server decides
// every call by the collection's rules.

import { failure } from './errors.js';
import type { KilnClient } from './index.js';

/** A stored document: the type's fields and its id. */
export type Doc<T> = T & { _id: string };

/** What a list asks: the database's query language (a documented subset). */
export interface ListOptions {
  filter?: Record<string, unknown>;
  sort?: Record<string, 1 | -1>;
  /** A projection: `{title: 1}` keeps `title` (and `_id`). */
  fields?: Record<string, 0 | 1>;
  /** 1 to 1,000 (the server's default: 100). */
  limit?: number;
  /** The `cursor` of the previous page of the same list. */
  cursor?: string;
}

export interface Page<T> {
  documents: Doc<T>[];
  /** Pass back as `cursor` for the next page; null on the last. */
  cursor: string | null;
}

/** One collection, as this client may reach it. */
export class Collection<T extends Record<string, unknown> = Record<string, unknown>> {
  constructor(
    private readonly client: KilnClient,
    readonly name: string,
  ) {}

  private path(id?: string): string {
    const base = `/_kiln/data/${encodeURIComponent(this.name)}`;
    return id === undefined ? base : `${base}/${encodeURIComponent(id)}`;
  }

  private async call<R>(method: string, path: string, body?: unknown): Promise<R> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.headers = { 'content-type': 'application/json' };
      init.body = JSON.stringify(body);
    }
    const response = await this.client.fetch(path, init);
    if (!response.ok) throw await failure(response);
    return (await response.json()) as R;
  }

  private query(options: ListOptions & { count?: boolean }): string {
    const params = new URLSearchParams();
    for (const key of ['filter', 'sort', 'fields'] as const) {
      if (options[key] !== undefined) params.set(key, JSON.stringify(options[key]));
    }
    if (options.limit !== undefined) params.set('limit', String(options.limit));
    if (options.cursor !== undefined) params.set('cursor', options.cursor);
    if (options.count) params.set('count', 'true');
    const text = params.toString();
    return text ? `?${text}` : '';
  }

  /** One page of the documents the caller may list. */
  async list(options: ListOptions = {}): Promise<Page<T>> {
    const page = await this.call<{ documents: Doc<T>[]; cursor?: string | null }>('GET', this.path() + this.query(options));
    return { documents: page.documents, cursor: page.cursor ?? null };
  }

  /** Every document the caller may list, page by page. */
  async *iterate(options: Omit<ListOptions, 'cursor'> = {}): AsyncGenerator<Doc<T>> {
    let cursor: string | undefined;
    do {
      const page = await this.list({ ...options, cursor });
      yield* page.documents;
      cursor = page.cursor ?? undefined;
    } while (cursor !== undefined);
  }

  /** How many documents the caller may list match `filter`. */
  async count(filter: Record<string, unknown> = {}): Promise<number> {
    return (await this.call<{ count: number }>('GET', this.path() + this.query({ filter, count: true }))).count;
  }

  /** The document; a missing one and one the rules hide both throw 404 `document_not_found`. */
  async get(id: string): Promise<Doc<T>> {
    return this.call<Doc<T>>('GET', this.path(id));
  }

  /** Creates a document (an `_id` may be given); returns it as stored. */
  async create(doc: T & { _id?: string }): Promise<Doc<T>> {
    return (await this.call<{ document: Doc<T> }>('POST', this.path(), doc)).document;
  }

  /** Applies update operators (`{$set: {...}, $inc: {...}}`); returns the document after. */
  async update(id: string, update: Record<string, unknown>): Promise<Doc<T>> {
    return (await this.call<{ document: Doc<T> }>('PATCH', this.path(id), update)).document;
  }

  /** Replaces the document (server-set fields are kept); returns it after. */
  async replace(id: string, doc: T): Promise<Doc<T>> {
    return (await this.call<{ document: Doc<T> }>('PUT', this.path(id), doc)).document;
  }

  async delete(id: string): Promise<void> {
    await this.call('DELETE', this.path(id));
  }
}
