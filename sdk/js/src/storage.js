// The app's files: whole-file calls of kiln:platform/storage.
import * as wit from 'kiln:platform/storage@0.1.0';
import { hostCall, invalidInput } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The host's file-meta record, with a Date and plain numbers. */
function meta(m) {
  return {
    key: m.key,
    size: Number(m.size),
    contentType: m.contentType,
    etag: m.etag,
    modified: new Date(Number(m.modifiedMs)),
  };
}

function bytesOf(data, what) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw invalidInput(`${what}: data is a string, Uint8Array or ArrayBuffer`);
}

function keyOf(key, what) {
  if (typeof key !== 'string') throw invalidInput(`${what}: the key is a string`);
  return key;
}

export const storage = {
  /** Stores `data` (string or bytes, at most 16 MiB) at `key`; resolves to its metadata. */
  async put(key, data, { contentType } = {}) {
    const what = `storage.put(${JSON.stringify(key)})`;
    const bytes = bytesOf(data, what);
    return meta(hostCall(what, () => wit.put(keyOf(key, what), bytes, contentType ?? undefined)));
  },
  /** The file's bytes (at most 16 MiB). */
  async get(key) {
    const what = `storage.get(${JSON.stringify(key)})`;
    const got = hostCall(what, () => wit.get(keyOf(key, what)));
    // The bindings may hand over a buffer or a typed array of another kind.
    if (got instanceof Uint8Array) return got;
    return ArrayBuffer.isView(got) ? new Uint8Array(got.buffer, got.byteOffset, got.byteLength) : new Uint8Array(got);
  },
  /** The file as UTF-8 text. */
  async getText(key) {
    return decoder.decode(await storage.get(key));
  },
  /** The file's metadata, or null. */
  async head(key) {
    const what = `storage.head(${JSON.stringify(key)})`;
    const found = hostCall(what, () => wit.head(keyOf(key, what)));
    return found == null ? null : meta(found);
  },
  /** Deletes the file; false when there was none. */
  async delete(key) {
    const what = `storage.delete(${JSON.stringify(key)})`;
    return hostCall(what, () => wit.delete(keyOf(key, what)));
  },
  /** One page of files whose key starts with `prefix`: `{files, cursor}`. */
  async list(prefix = '', { cursor, limit = 100 } = {}) {
    const what = `storage.list(${JSON.stringify(prefix)})`;
    const page = hostCall(what, () => wit.listFiles(String(prefix), cursor ?? undefined, limit));
    return { files: page.files.map(meta), cursor: page.cursor ?? null };
  },
  /** Copies `source` to `destination`; resolves to the copy's metadata. */
  async copy(source, destination) {
    const what = `storage.copy(${JSON.stringify(source)}, ${JSON.stringify(destination)})`;
    return meta(hostCall(what, () => wit.copy(keyOf(source, what), keyOf(destination, what))));
  },
  /** A URL allowing `method` ('GET' or 'PUT') on `key` for `expiresSecs` seconds. */
  async signedUrl(key, method = 'GET', expiresSecs = 3600) {
    const what = `storage.signedUrl(${JSON.stringify(key)})`;
    return hostCall(what, () => wit.signedUrl(keyOf(key, what), String(method), expiresSecs));
  },
};
