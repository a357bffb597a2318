// The app's file endpoints (/_kiln/files) and resumable uploads
// (/_kiln/uploads), with the signed-in user's token. Uploads go in chunks
// of the server's part size, so an interrupted one loses at most one chunk
// and can be continued, in this run or a later one, from its id.

import { failure, KilnClientError } from './errors.js';
import type { KilnClient } from './index.js';

/** A stored file as the endpoints describe it. */
export interface FileInfo {
  bucket: string;
  key: string;
  size: number;
  content_type: string;
  etag: string;
  modified_ms: number;
}

export interface FileList {
  files: FileInfo[];
  /** Pass as `cursor` for the next page; null on the last. */
  cursor: string | null;
}

export interface UploadProgress {
  /** Continue an interrupted upload by passing this as `uploadId`. */
  uploadId: string;
  /** Bytes the server has confirmed. */
  loaded: number;
  total: number;
}

export interface UploadOptions {
  contentType?: string;
  /** Called when the upload starts and after every confirmed chunk. */
  onProgress?: (progress: UploadProgress) => void;
  /** Continue this unfinished upload instead of starting one. */
  uploadId?: string;
  /** Bytes per request; rounded up to a multiple of the server's part size (8 MiB). */
  chunkBytes?: number;
  /** Times a failed request is retried, each after asking the server where the upload stands (3). */
  retries?: number;
  signal?: AbortSignal;
}

export type FileBody = Blob | ArrayBuffer | ArrayBufferView | string;

export interface SignedUrl {
  /** Absolute; usable without a token until `expires_at`. */
  url: string;
  method: 'GET' | 'PUT';
  /** Seconds since the epoch. */
  expires_at: number;
}

interface UploadState {
  id: string;
  offset: number;
  size: number;
  part_bytes: number;
  file: FileInfo | null;
}

const UPLOADS = '/_kiln/uploads';

function filePath(bucket: string, key: string): string {
  const encoded = key.split('/').map(encodeURIComponent).join('/');
  return `/_kiln/files/${encodeURIComponent(bucket)}/${encoded}`;
}

function asBlob(body: FileBody, contentType?: string): Blob {
  if (body instanceof Blob) return body;
  const options = contentType ? { type: contentType } : undefined;
  return new Blob([body as BlobPart], options);
}

async function ok(response: Response): Promise<Response> {
  if (!response.ok) throw await failure(response);
  return response;
}

/** Statuses worth retrying after asking where the upload stands. */
function retryable(err: unknown): boolean {
  if (err instanceof KilnClientError) return err.status >= 500 || err.code === 'upload_offset_mismatch';
  // fetch rejects with a TypeError when the connection fails.
  return err instanceof TypeError;
}

/** The JSON's etag is bare; the headers' is quoted. */
const quoted = (etag: string) => (etag.startsWith('"') || etag.startsWith('W/') ? etag : `"${etag}"`);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class Files {
  constructor(private readonly client: KilnClient) {}

  /** The file's absolute URL: for `<img src>` on a public bucket, or a fetch with a token. */
  url(bucket: string, key: string): string {
    return this.client.url(filePath(bucket, key));
  }

  /** Stores a file in one request (`ifAbsent`: only where there is none, else 409 `file_exists`). */
  async put(bucket: string, key: string, body: FileBody, options: { contentType?: string; ifAbsent?: boolean } = {}): Promise<FileInfo> {
    const blob = asBlob(body, options.contentType);
    const headers: Record<string, string> = { 'content-type': options.contentType || blob.type || 'application/octet-stream' };
    if (options.ifAbsent) headers['if-none-match'] = '*';
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const response = await ok(await this.client.fetch(filePath(bucket, key), { method: 'PUT', headers, body: bytes }));
    return (await response.json()) as FileInfo;
  }

  /**
   * Stores a file through a resumable upload, a chunk per request. A failed
   * request is retried from the offset the server confirmed; if the upload
   * still fails (or `signal` aborts it), call again with the same body and
   * the `uploadId` last given to `onProgress` to continue it.
   */
  async upload(bucket: string, key: string, body: FileBody, options: UploadOptions = {}): Promise<FileInfo> {
    const blob = asBlob(body, options.contentType);
    const contentType = options.contentType || blob.type || 'application/octet-stream';
    if (blob.size === 0) return this.put(bucket, key, blob, { contentType });
    let state = options.uploadId
      ? await this.uploadState(options.uploadId, options.signal)
      : await this.json<UploadState>(UPLOADS, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ bucket, key, size: blob.size, content_type: contentType }),
          signal: options.signal,
        });
    if (state.size !== blob.size) {
      throw new KilnClientError(400, 'invalid_input', `upload ${state.id} is of ${state.size} bytes, not ${blob.size}`);
    }
    const part = Math.max(1, state.part_bytes);
    const chunk = Math.max(1, Math.ceil((options.chunkBytes ?? part) / part)) * part;
    const report = () => options.onProgress?.({ uploadId: state.id, loaded: state.offset, total: state.size });
    report();
    const retries = options.retries ?? 3;
    let failures = 0;
    for (;;) {
      options.signal?.throwIfAborted();
      const bytes = new Uint8Array(await blob.slice(state.offset, state.offset + chunk).arrayBuffer());
      try {
        const next = await this.json<UploadState>(`${UPLOADS}/${encodeURIComponent(state.id)}`, {
          method: 'PATCH',
          headers: { 'upload-offset': String(state.offset), 'content-type': 'application/offset+octet-stream' },
          body: bytes,
          signal: options.signal,
        });
        state = { ...state, offset: next.offset };
        failures = 0;
        report();
        if (next.file) return next.file;
      } catch (err) {
        if (options.signal?.aborted || !retryable(err) || failures >= retries) throw err;
        failures += 1;
        await sleep(200 * 2 ** failures);
        state = { ...state, offset: (await this.uploadState(state.id, options.signal)).offset };
      }
    }
  }

  /** Where an unfinished upload stands (404 `upload_not_found` once finished, aborted or expired). */
  uploadState(uploadId: string, signal?: AbortSignal): Promise<UploadState> {
    return this.json<UploadState>(`${UPLOADS}/${encodeURIComponent(uploadId)}`, { signal });
  }

  /** Gives up an unfinished upload, dropping what it stored. */
  async abortUpload(uploadId: string): Promise<void> {
    await this.json(`${UPLOADS}/${encodeURIComponent(uploadId)}`, { method: 'DELETE' });
  }

  /**
   * The file's response, its body a stream: `range` asks for bytes
   * `[start, end]` (206), `ifNoneMatch` an ETag the caller holds (304 when
   * it still matches). Other answers than 200, 206 and 304 throw.
   */
  async open(bucket: string, key: string, options: { range?: { start: number; end?: number }; ifNoneMatch?: string } = {}): Promise<Response> {
    const headers: Record<string, string> = {};
    if (options.range) headers.range = `bytes=${options.range.start}-${options.range.end ?? ''}`;
    if (options.ifNoneMatch) headers['if-none-match'] = quoted(options.ifNoneMatch);
    const response = await this.client.fetch(filePath(bucket, key), { headers });
    if (response.status === 304) return response;
    return ok(response);
  }

  /** The whole file, or bytes `[start, end]` of it. */
  async download(bucket: string, key: string, range?: { start: number; end?: number }): Promise<Blob> {
    return (await this.open(bucket, key, { range })).blob();
  }

  /** The file's metadata, or null when there is none. */
  async head(bucket: string, key: string): Promise<FileInfo | null> {
    const response = await this.client.fetch(filePath(bucket, key), { method: 'HEAD' });
    if (response.status === 404) return null;
    if (!response.ok) throw new KilnClientError(response.status, response.status === 403 ? 'file_access_denied' : 'unknown', `HEAD ${key}: ${response.status}`);
    const modified = response.headers.get('last-modified');
    return {
      bucket,
      key,
      size: Number(response.headers.get('content-length') ?? 0),
      content_type: response.headers.get('content-type') ?? 'application/octet-stream',
      etag: (response.headers.get('etag') ?? '').replace(/^"|"$/g, ''),
      modified_ms: modified ? Date.parse(modified) : 0,
    };
  }

  /** Deletes the file. */
  async delete(bucket: string, key: string): Promise<void> {
    await this.json(filePath(bucket, key), { method: 'DELETE' });
  }

  /** One page of the bucket's files, in key order. */
  list(bucket: string, options: { prefix?: string; cursor?: string | null; limit?: number } = {}): Promise<FileList> {
    const query = new URLSearchParams();
    if (options.prefix) query.set('prefix', options.prefix);
    if (options.cursor) query.set('cursor', options.cursor);
    if (options.limit) query.set('limit', String(options.limit));
    const text = query.toString();
    const suffix = text ? `?${text}` : '';
    return this.json<FileList>(`/_kiln/files/${encodeURIComponent(bucket)}${suffix}`, {});
  }

  /** A URL that does `method` on the file without a token until it expires (1 s to 7 days). */
  async signedUrl(bucket: string, key: string, options: { method?: 'GET' | 'PUT'; expiresIn?: number } = {}): Promise<SignedUrl> {
    const signed = await this.json<SignedUrl>(filePath(bucket, key), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ method: options.method ?? 'GET', expires_in: options.expiresIn ?? 3600 }),
    });
    // Kiln signs paths relative to the app; S3 presigns absolute URLs.
    return /^https?:/.test(signed.url) ? signed : { ...signed, url: this.client.url(signed.url) };
  }

  private async json<T>(path: string, init: RequestInit): Promise<T> {
    const response = await ok(await this.client.fetch(path, init));
    return (await response.json()) as T;
  }
}
