// Types of @kiln/sdk. The WIT interfaces behind it are in `wit/` at the
// root of the Kiln repository.

/** A JSON value as Kiln stores it; `Date` travels as `{"$date": "<RFC 3339>"}`. */
export type Value = null | boolean | number | string | Date | Value[] | { [key: string]: Value | undefined };

/** A stored document: a plain object whose `_id` is a string. */
export type Document = { _id?: string; [key: string]: Value | undefined };

/** A MongoDB-style filter, update, sort or projection (a documented subset of operators). */
export type Filter = { [key: string]: unknown };
export type Update = { [key: string]: unknown };
export type Sort = { [field: string]: 1 | -1 };
export type Projection = { [field: string]: 0 | 1 | boolean };

export interface UpdateResult {
  matched: number;
  modified: number;
  /** The `_id` of an upserted document. */
  upsertedId?: string;
}

export interface Page<T> {
  documents: T[];
  /** Pass to `page()` for the next page; undefined on the last. */
  cursor?: string;
}

export declare class Query<T extends object = Document> implements AsyncIterable<T> {
  sort(spec: Sort): this;
  project(spec: Projection): this;
  limit(n: number): this;
  skip(n: number): this;
  /** Documents per page, 1 to 1000 (100 when iterating without one). */
  batchSize(n: number): this;
  /** One page; without `batchSize`, a find over 1000 documents is `limit-exceeded`. */
  page(cursor?: string): Promise<Page<T>>;
  /** Every page, following the cursor. */
  pages(): AsyncIterableIterator<Page<T>>;
  /** Every matching document, across pages. */
  [Symbol.asyncIterator](): AsyncIterator<T>;
  toArray(): Promise<T[]>;
}

export declare class Collection<T extends object = Document> {
  readonly name: string;
  insert(doc: T): Promise<string>;
  insertMany(docs: T[]): Promise<string[]>;
  get(id: string): Promise<T | null>;
  find(filter?: Filter): Query<T>;
  findOne(filter?: Filter, options?: { sort?: Sort }): Promise<T | null>;
  update(filter: Filter, update: Update, options?: { upsert?: boolean }): Promise<UpdateResult>;
  updateMany(filter: Filter, update: Update, options?: { upsert?: boolean }): Promise<UpdateResult>;
  replace(filter: Filter, doc: T, options?: { upsert?: boolean }): Promise<UpdateResult>;
  findOneAndUpdate(
    filter: Filter,
    update: Update,
    options?: { returnNew?: boolean; upsert?: boolean },
  ): Promise<T | null>;
  /** Deletes the first match; resolves to 0 or 1. */
  delete(filter: Filter): Promise<number>;
  deleteMany(filter: Filter): Promise<number>;
  count(filter?: Filter): Promise<number>;
  createIndex(keys: Sort, options?: { unique?: boolean }): Promise<void>;
  drop(): Promise<void>;
  /** Writes through the collection's hooks (`before_write`, `after_write`), as a client's write would; the other writes call none. */
  withHooks(): HookedWrites<T>;
}

/** Writes through a declared collection's hooks; each resolves to the document as written. A hook's own calls are refused. */
export declare class HookedWrites<T extends object = Document> {
  create(doc: T): Promise<T>;
  update(id: string, update: Update): Promise<T>;
  replace(id: string, doc: T): Promise<T>;
  delete(id: string): Promise<void>;
}

export declare const db: {
  collection<T extends object = Document>(name: string): Collection<T>;
};

/** A user of the app. */
export interface User {
  id: string;
  /** Lower-cased; null for an anonymous user. */
  email: string | null;
  emailVerified: boolean;
  roles: string[];
  /** Profile data. */
  data: Record<string, Value>;
  disabled: boolean;
  anonymous: boolean;
  mfaEnabled: boolean;
  createdAt: Date;
}

/** Who made this request, as the host verified it. */
export interface Caller {
  user: User;
  sessionId: string;
  /** Whether the session passed the second factor. */
  mfa: boolean;
}

export declare const auth: {
  /** The verified caller, or null without a token (and in cron and job runs). */
  currentUser(): Promise<Caller | null>;
  getUser(id: string): Promise<User | null>;
  /** Looks a user up by email (compared case-folded). */
  findUserByEmail(email: string): Promise<User | null>;
  /** Users in creation order: at most `limit` (up to 100) after the id `after`. */
  listUsers(options?: { after?: string; limit?: number }): Promise<User[]>;
  createUser(user: { email: string; password: string; data?: Record<string, Value> }): Promise<User>;
  /** Replaces the user's profile data. */
  updateData(id: string, data: Record<string, Value>): Promise<User>;
  /** Replaces the user's roles; effective on their next request. */
  setRoles(id: string, roles: string[]): Promise<User>;
  /** Disables (signing them out everywhere) or re-enables the user. */
  setDisabled(id: string, disabled: boolean): Promise<User>;
  deleteUser(id: string): Promise<void>;
  /** Revokes every session of the user; resolves to how many. */
  revokeSessions(id: string): Promise<number>;
};

export declare const config: {
  /** The variable's value from kiln.toml, or undefined. */
  get(name: string): string | undefined;
  all(): Record<string, string>;
};

export declare const scheduler: {
  /** Runs `fn` of this app once at `when` (a Date, or a delay in ms) with `payload`; resolves to the job id. */
  schedule(fn: string, when: Date | number, payload?: Value): Promise<string>;
  cancel(jobId: string): Promise<void>;
};

export type ErrorCode =
  | 'not-found'
  | 'conflict'
  | 'invalid-input'
  | 'permission-denied'
  | 'limit-exceeded'
  | 'unavailable';

export declare const ERROR_CODES: readonly ErrorCode[];

/** Every failure of a platform call. */
export declare class KilnError extends Error {
  constructor(code: ErrorCode, message: string, options?: ErrorOptions);
  readonly name: 'KilnError';
  readonly code: ErrorCode;
}

/** The function's variables from kiln.toml, as on Workers. */
export type Env = Readonly<Record<string, string | undefined>>;

/** The route a request matched. */
export interface FetchContext {
  app?: string;
  /** The route's pattern, e.g. `/todos/:id`. */
  route?: string;
  /** The route's parameters, e.g. `{id: "42"}`. */
  params: Record<string, string>;
  /** The id in the `kiln-request-id` response header and the logs. */
  requestId?: string;
  waitUntil(promise: Promise<unknown>): void;
}

/** One occurrence of a cron trigger or a one-off job. */
export interface ScheduledEvent<P = Value> {
  /** The trigger's name, or the job id. */
  trigger: string;
  /** When it was due, in ms since the epoch. */
  scheduledTime: number;
  /** When this run started, in ms since the epoch. */
  startedTime: number;
  payload: P;
}

export interface ScheduledContext {
  waitUntil(promise: Promise<unknown>): void;
}

/** What a bucket's `function:NAME` rule asks: may this client do this? */
export interface FileRuleQuestion {
  action: 'read' | 'upload' | 'replace' | 'delete';
  bucket: string;
  /** The key inside the bucket; for a listing, its prefix as sent. */
  key: string;
  /** Whether this is a listing (`action` is then `read`). */
  list: boolean;
  /** The signed-in caller, or null. */
  user: { id: string; sessionId: string; roles: string[]; mfa: boolean } | null;
  /** For upload and replace: the file's content type and declared size (null when not declared). */
  contentType?: string;
  size?: number | null;
}

/** Only `true` (or `{allow: true}`) allows; anything else, or a throw, refuses. */
export type FileRuleVerdict = boolean | { allow: boolean; reason?: string };

/** A write to a collection, as its hooks see it. */
export interface WriteEvent<T = Record<string, unknown>> {
  collection: string;
  action: 'create' | 'update' | 'delete';
  /** The document's id. */
  id: string;
  /** The stored document before the write (null on create). */
  before: (T & { _id: string }) | null;
  /** beforeWrite: the document proposed (null on delete). */
  document?: (T & { _id: string }) | null;
  /** afterWrite: the document as committed (null on delete). */
  after?: (T & { _id: string }) | null;
  /** The client that wrote, or null. */
  user: { id: string; roles: string[]; mfa: boolean } | null;
}

/** What `beforeWrite` answers: nothing (write as proposed), a changed document, or a refusal. */
export type BeforeWriteAnswer =
  | void
  | { document: Record<string, unknown> }
  | { refuse: { status?: 400 | 403; code: string; message: string } };

/** What `export default` holds. A throw from `scheduled` fails the run. */
export interface Handlers {
  /** Runs inside a client's write to a collection whose `before_write` names this function; a throw refuses the write. */
  beforeWrite?(event: WriteEvent, env: Env, ctx: FetchContext): BeforeWriteAnswer | Promise<BeforeWriteAnswer>;
  /** Runs after a client's write committed, at least once; a throw fails the attempt, which is retried. */
  afterWrite?(event: WriteEvent, env: Env, ctx: FetchContext): void | Promise<void>;
  /** Decides for a collection whose rule is `function:NAME` naming this function. */
  collectionRule?(question: Record<string, unknown>, env: Env, ctx: FetchContext): FileRuleVerdict | Promise<FileRuleVerdict>;
  fetch?(request: Request, env: Env, ctx: FetchContext): Response | Promise<Response>;
  scheduled?(event: ScheduledEvent, env: Env, ctx: ScheduledContext): void | Promise<void>;
  /** Decides for a bucket whose rule is `function:NAME` naming this function. */
  fileRule?(question: FileRuleQuestion, env: Env, ctx: FetchContext): FileRuleVerdict | Promise<FileRuleVerdict>;
}

/** What is known of a stored file. */
export interface FileMeta {
  key: string;
  size: number;
  contentType: string;
  /** Changes on every write of the key. */
  etag: string;
  modified: Date;
}

/** A file being written through a stream; dropped unfinished, nothing is stored. */
export interface FileWriter {
  /** Appends a piece; resolves once the host took it. */
  write(data: string | Uint8Array | ArrayBuffer | ArrayBufferView): Promise<void>;
  /** Stores the file. */
  finish(): Promise<FileMeta>;
}

/** A file being read through a stream, with its metadata. */
export interface FileReader extends FileMeta, AsyncIterable<Uint8Array> {
  /** The next bytes (at most `maxBytes`, 64 KiB by default), or null at the end. */
  read(maxBytes?: number): Promise<Uint8Array | null>;
  /** The rest of the file as a stream, e.g. for `new Response(reader.stream())`. */
  stream(): ReadableStream<Uint8Array>;
}

/** The app's files (keys: `/`-separated, at most 512 bytes). */
export declare const storage: {
  /** Streams a file of up to 5 GiB into `key`; `ifAbsent` only creates; past `maxBytes`, `limit-exceeded`. */
  write(key: string, options?: { contentType?: string; ifAbsent?: boolean; maxBytes?: number }): Promise<FileWriter>;
  /** Opens the file, or bytes `[start, end)` of it (clamped to the end), for reading. */
  read(key: string, range?: { start?: number; end?: number }): Promise<FileReader>;
  /** Stores `data` (at most 16 MiB) at `key`, replacing what is there. */
  put(key: string, data: string | Uint8Array | ArrayBuffer | ArrayBufferView, options?: { contentType?: string }): Promise<FileMeta>;
  /** The file's bytes (at most 16 MiB). */
  get(key: string): Promise<Uint8Array>;
  /** The file as UTF-8 text. */
  getText(key: string): Promise<string>;
  /** The file's metadata, or null. */
  head(key: string): Promise<FileMeta | null>;
  /** Deletes the file; false when there was none. */
  delete(key: string): Promise<boolean>;
  /** One page (1 to 1,000) of files whose key starts with `prefix`. */
  list(prefix?: string, options?: { cursor?: string; limit?: number }): Promise<{ files: FileMeta[]; cursor: string | null }>;
  /** Copies `source` to `destination`, replacing what is there. */
  copy(source: string, destination: string): Promise<FileMeta>;
  /** A URL allowing `method` on `key` for `expiresSecs` (1 s to 7 days); the key's bucket must be in kiln.toml. */
  signedUrl(key: string, method?: 'GET' | 'PUT', expiresSecs?: number): Promise<string>;
};
