// The app's files: kiln:platform/storage, whole-file calls and streams.
// Streams are wasi:io streams; a write goes in pieces the host has room
// for, so a function passes a large file through without holding it.
import * as wit from 'kiln:platform/storage@0.1.0';
import { hostCall, invalidInput, KilnError } from './errors.js';

/** The host's cap on one file written through a stream (5 GiB). */
const MAX_FILE_BYTES = 5 * 1024 * 1024 * 1024;
/** Bytes asked of the host per read. */
const READ_BYTES = 64 * 1024;

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

/** A file being written: `write` pieces, then `finish`; unfinished, nothing is stored. */
class FileWriter {
  #writer;
  #body;
  #what;
  #failed = null;

  constructor(writer, body, what) {
    this.#writer = writer;
    this.#body = body;
    this.#what = what;
  }

  /** Appends `data` (a string or bytes); resolves once the host took it. */
  async write(data) {
    if (this.#failed) throw this.#failed;
    const bytes = bytesOf(data, this.#what);
    let offset = 0;
    try {
      while (offset < bytes.length) {
        const permit = Number(this.#body.checkWrite());
        if (permit === 0) {
          // Waits until the host drained the pipe.
          this.#body.blockingFlush();
          continue;
        }
        const end = Math.min(bytes.length, offset + permit);
        this.#body.write(bytes.subarray(offset, end));
        offset = end;
      }
    } catch (err) {
      // The stream breaks when the host's side stopped (past max-bytes, a
      // backend failure); finishing tells why.
      this.#failed = this.#why(err);
      throw this.#failed;
    }
  }

  /** Stores the file; resolves to its metadata. */
  async finish() {
    if (this.#failed) throw this.#failed;
    return meta(hostCall(this.#what, () => this.#writer.finish(this.#body)));
  }

  #why(streamError) {
    try {
      hostCall(this.#what, () => this.#writer.finish(this.#body));
    } catch (err) {
      if (err instanceof KilnError) return err;
    }
    return new KilnError('unavailable', `${this.#what}: the file's stream failed (${streamError?.payload?.tag ?? streamError})`);
  }
}

/** A file being read: `read` pieces, iterate with `for await`, or hand `stream()` to a Response. */
class FileReader {
  #stream;
  #what;

  constructor(file, stream, what) {
    Object.assign(this, file);
    this.#stream = stream;
    this.#what = what;
  }

  /** The next bytes (at most `maxBytes`), or null at the end. */
  async read(maxBytes = READ_BYTES) {
    try {
      return this.#stream.blockingRead(BigInt(maxBytes));
    } catch (err) {
      if (err?.payload?.tag === 'closed') return null;
      throw new KilnError('unavailable', `${this.#what}: reading failed (${err?.payload?.tag ?? err})`);
    }
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const chunk = await this.read();
      if (chunk === null) return;
      if (chunk.length > 0) yield chunk;
    }
  }

  /** The rest of the file as a ReadableStream, e.g. `new Response(file.stream())`. */
  stream() {
    return new ReadableStream({
      pull: async (controller) => {
        const chunk = await this.read();
        if (chunk === null) controller.close();
        else controller.enqueue(chunk);
      },
    });
  }
}

function sizeOf(value, what, name) {
  if (!Number.isSafeInteger(value) || value < 0) throw invalidInput(`${what}: ${name} is a whole number of bytes`);
  return BigInt(value);
}

export const storage = {
  /**
   * A writer streaming into `key` (up to 5 GiB): `ifAbsent` only creates
   * (`conflict` when a file is there), past `maxBytes` it is `limit-exceeded`.
   */
  async write(key, { contentType, ifAbsent = false, maxBytes = MAX_FILE_BYTES } = {}) {
    const what = `storage.write(${JSON.stringify(key)})`;
    const limit = sizeOf(maxBytes, what, 'maxBytes');
    const writer = hostCall(what, () => wit.write(keyOf(key, what), contentType ?? undefined, Boolean(ifAbsent), limit));
    return new FileWriter(writer, hostCall(what, () => writer.body()), what);
  },
  /** Opens the file, or bytes `[start, end)` of it: its metadata and a reader. */
  async read(key, { start, end } = {}) {
    const what = `storage.read(${JSON.stringify(key)})`;
    let range;
    if (start !== undefined || end !== undefined) {
      range = [sizeOf(start ?? 0, what, 'start'), sizeOf(end ?? Number.MAX_SAFE_INTEGER, what, 'end')];
    }
    const [file, stream] = hostCall(what, () => wit.read(keyOf(key, what), range));
    return new FileReader(meta(file), stream, what);
  },

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
