// The app's document database: collections of plain objects, queried with
// MongoDB's operators. Calls are synchronous underneath; they return
// promises so code reads like the MongoDB driver and stays right when the
// host calls become asynchronous.
import * as hooked from 'kiln:platform/collections@0.1.0';
import * as wit from 'kiln:platform/database@0.1.0';
import { hostCall, invalidInput } from './errors.js';
import { decode, encode, encodeObject, u64 } from './wire.js';

/** Documents per page when iterating a find without an explicit batch size. */
const DEFAULT_BATCH = 100;
const MAX_BATCH = 1000;

function updateResult(r) {
  return { matched: Number(r.matched), modified: Number(r.modified), upsertedId: r.upsertedId ?? undefined };
}

export class Collection {
  constructor(name) {
    if (typeof name !== 'string' || name.length === 0) throw invalidInput('a collection name is a non-empty string');
    this.name = name;
  }

  #call(op, call) {
    return hostCall(`${this.name}.${op}`, call);
  }

  /** Inserts a document; resolves to its `_id`. */
  async insert(doc) {
    const text = encodeObject(doc, `${this.name}.insert document`);
    return this.#call('insert', () => wit.insert(this.name, text));
  }

  /** Inserts documents in order, all or nothing; resolves to their `_id`s. */
  async insertMany(docs) {
    if (!Array.isArray(docs)) throw invalidInput(`${this.name}.insertMany takes an array`);
    const texts = docs.map((d, i) => encodeObject(d, `${this.name}.insertMany document ${i}`));
    return this.#call('insertMany', () => wit.insertMany(this.name, texts));
  }

  /** The document with this `_id`, or null. */
  async get(id) {
    const text = this.#call('get', () => wit.get(this.name, String(id)));
    return text === undefined ? null : decode(text);
  }

  /** A query: chain `sort`, `limit`, `skip`, `project`, `batchSize`, then read it. */
  find(filter = {}) {
    return new Query(this, encodeObject(filter, `${this.name}.find filter`));
  }

  /** The first match, or null. */
  async findOne(filter = {}, { sort } = {}) {
    const query = this.find(filter).limit(1);
    if (sort) query.sort(sort);
    const { documents } = await query.page();
    return documents[0] ?? null;
  }

  /** Applies an update (`$set`, `$inc`, ...) to the first match. */
  async update(filter, update, { upsert = false } = {}) {
    return this.#update('update', filter, update, { upsert, multi: false });
  }

  /** Applies an update to every match. */
  async updateMany(filter, update, { upsert = false } = {}) {
    return this.#update('updateMany', filter, update, { upsert, multi: true });
  }

  #update(op, filter, update, options) {
    const f = encodeObject(filter, `${this.name}.${op} filter`);
    const u = encodeObject(update, `${this.name}.${op} update`);
    return updateResult(this.#call(op, () => wit.update(this.name, f, u, options)));
  }

  /** Replaces the first match with `doc`. */
  async replace(filter, doc, { upsert = false } = {}) {
    const f = encodeObject(filter, `${this.name}.replace filter`);
    const d = encodeObject(doc, `${this.name}.replace document`);
    return updateResult(this.#call('replace', () => wit.replace(this.name, f, d, upsert)));
  }

  /** Updates the first match atomically; resolves to it (after the update unless `returnNew: false`), or null. */
  async findOneAndUpdate(filter, update, { returnNew = true, upsert = false } = {}) {
    const f = encodeObject(filter, `${this.name}.findOneAndUpdate filter`);
    const u = encodeObject(update, `${this.name}.findOneAndUpdate update`);
    const text = this.#call('findOneAndUpdate', () => wit.findOneAndUpdate(this.name, f, u, returnNew, upsert));
    return text === undefined ? null : decode(text);
  }

  /** Deletes the first match; resolves to how many were deleted (0 or 1). */
  async delete(filter) {
    const f = encodeObject(filter, `${this.name}.delete filter`);
    return Number(this.#call('delete', () => wit.delete(this.name, f, false)));
  }

  /** Deletes every match; resolves to how many. */
  async deleteMany(filter) {
    const f = encodeObject(filter, `${this.name}.deleteMany filter`);
    return Number(this.#call('deleteMany', () => wit.delete(this.name, f, true)));
  }

  async count(filter = {}) {
    const f = encodeObject(filter, `${this.name}.count filter`);
    return Number(this.#call('count', () => wit.count(this.name, f)));
  }

  /** Creates an index over `keys`, e.g. `{email: 1}`; idempotent. */
  async createIndex(keys, { unique = false } = {}) {
    const k = encodeObject(keys, `${this.name}.createIndex keys`);
    this.#call('createIndex', () => wit.createIndex(this.name, k, unique));
  }

  /** Drops the collection and its indexes. */
  async drop() {
    this.#call('drop', () => wit.dropCollection(this.name));
  }

  /**
   * Writes through the collection's hooks (`before_write`, `after_write` in
   * kiln.toml), as a client's write would; the other writes call none.
   */
  withHooks() {
    return new HookedWrites(this.name);
  }
}

/** One document's writes through a declared collection's hooks; each resolves to the document as written. */
class HookedWrites {
  constructor(name) {
    this.name = name;
  }

  #write(op, id, change) {
    const text = hostCall(`${this.name}.withHooks().${op}`, () => hooked.writeWithHooks(this.name, id, change));
    return text === undefined ? null : decode(text);
  }

  async create(doc) {
    return this.#write('create', undefined, { tag: 'create', val: encodeObject(doc, `${this.name}.create document`) });
  }

  async update(id, update) {
    return this.#write('update', String(id), { tag: 'update', val: encodeObject(update, `${this.name}.update`) });
  }

  async replace(id, doc) {
    return this.#write('replace', String(id), { tag: 'replace', val: encodeObject(doc, `${this.name}.replace document`) });
  }

  async delete(id) {
    this.#write('delete', String(id), { tag: 'delete' });
  }
}

/** A find, read a page at a time through the host's cursor. */
export class Query {
  #collection;
  #filter;
  #options = {};

  constructor(collection, filter) {
    this.#collection = collection;
    this.#filter = filter;
  }

  sort(spec) {
    this.#options.sort = encodeObject(spec, 'sort');
    return this;
  }

  project(spec) {
    this.#options.projection = encodeObject(spec, 'project');
    return this;
  }

  limit(n) {
    this.#options.limit = u64(n, 'limit');
    return this;
  }

  skip(n) {
    this.#options.skip = u64(n, 'skip');
    return this;
  }

  batchSize(n) {
    if (!Number.isInteger(n) || n < 1 || n > MAX_BATCH) throw invalidInput(`batchSize is 1 to ${MAX_BATCH}, not ${n}`);
    this.#options.batchSize = n;
    return this;
  }

  /**
   * One page: `{documents, cursor}`. Pass `cursor` back for the next page;
   * it is undefined on the last one.
   */
  async page(cursor) {
    return this.#read(cursor, this.#options.batchSize);
  }

  #read(cursor, batchSize) {
    const name = this.#collection.name;
    const options = { ...this.#options, batchSize, cursor };
    const page = hostCall(`${name}.find`, () => wit.find(name, this.#filter, options));
    return { documents: page.documents.map(decode), cursor: page.cursor ?? undefined };
  }

  /** Every page, following the cursor. */
  async *pages() {
    let cursor;
    do {
      const page = this.#read(cursor, this.#options.batchSize ?? DEFAULT_BATCH);
      yield page;
      cursor = page.cursor;
    } while (cursor !== undefined);
  }

  /** Every matching document, across pages. */
  async *[Symbol.asyncIterator]() {
    for await (const page of this.pages()) yield* page.documents;
  }

  /** Every matching document in one array (mind `limit` on large collections). */
  async toArray() {
    const all = [];
    for await (const page of this.pages()) all.push(...page.documents);
    return all;
  }
}

export const db = {
  collection: (name) => new Collection(name),
};
