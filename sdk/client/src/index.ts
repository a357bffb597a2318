// @kiln/client: a Kiln app's auth endpoints, routes, files and collections, from
// browsers and Node. One refresh runs at a time: Kiln rotates refresh tokens
// and treats a second use of one as theft, so concurrent refreshes must share
// one call.

import { Collection } from './data.js';
import { KilnClientError } from './errors.js';
import { Files } from './files.js';

export type { Doc, ListOptions, Page } from './data.js';
export { Collection } from './data.js';

export { KilnClientError } from './errors.js';
export type { FileBody, FileInfo, FileList, SignedUrl, UploadOptions, UploadProgress } from './files.js';
export { Files } from './files.js';

/** A user as the app's auth endpoints describe it. */
export interface User {
  id: string;
  email: string | null;
  email_verified: boolean;
  roles: string[];
  data: Record<string, unknown>;
  anonymous: boolean;
  disabled: boolean;
  mfa_enabled: boolean;
  created_ms: number;
  updated_ms: number;
}

/** A signed-in session's tokens. */
export interface Session {
  access_token: string;
  refresh_token: string;
  /** Seconds since the epoch. */
  expires_at: number;
  session_id: string;
  user: User;
}

/** A sign-in that needs the second factor. */
export interface SecondFactorRequired {
  mfa_required: true;
  challenge: string;
  methods: string[];
  expires_in: number;
}

export interface SessionInfo {
  id: string;
  device: string;
  address: string;
  created_ms: number;
  last_used_ms: number;
  expires_ms: number;
  mfa: boolean;
  current: boolean;
}

/** Where the session is kept between page loads or runs. */
export interface SessionStore {
  load(): Session | null | Promise<Session | null>;
  save(session: Session | null): void | Promise<void>;
}

/** Keeps the session in memory only (the default). */
export function memoryStore(): SessionStore {
  let current: Session | null = null;
  return {
    load: () => current,
    save: (session) => {
      current = session;
    },
  };
}

/** Keeps the session in `localStorage` under `key` (browsers). */
export function localStorageStore(key = 'kiln.session'): SessionStore {
  const storage = (globalThis as { localStorage?: Storage }).localStorage;
  if (!storage) throw new Error('localStorageStore: no localStorage here');
  return {
    load: () => {
      const text = storage.getItem(key);
      return text ? (JSON.parse(text) as Session) : null;
    },
    save: (session) => {
      if (session) storage.setItem(key, JSON.stringify(session));
      else storage.removeItem(key);
    },
  };
}

export interface ClientOptions {
  /** The app's base URL: `https://server/APP` or `https://APP.apps.example.com`. */
  url: string;
  store?: SessionStore;
  /** Refresh when the access token expires within this many seconds (60). */
  refreshMargin?: number;
  fetch?: typeof globalThis.fetch;
}

type Listener = (session: Session | null) => void;

export class KilnClient {
  readonly auth: Auth;
  readonly files: Files;
  private readonly base: string;
  private readonly doFetch: typeof globalThis.fetch;

  constructor(options: ClientOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.auth = new Auth(this, options.store ?? memoryStore(), options.refreshMargin ?? 60);
    this.files = new Files(this);
  }

  /** A collection the app opens to clients, typed by its documents' fields. */
  collection<T extends Record<string, unknown> = Record<string, unknown>>(name: string): Collection<T> {
    return new Collection<T>(this, name);
  }

  /** The absolute URL of an app path. */
  url(path: string): string {
    return `${this.base}${path.startsWith('/') ? path : `/${path}`}`;
  }

  /**
   * Calls one of the app's routes with the user's access token (refreshed
   * first when it is about to expire; refreshed and retried once on a 401
   * `invalid_token`).
   */
  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const send = async (token: string | null) => {
      const headers = new Headers(init.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      return this.doFetch(this.url(path), { ...init, headers });
    };
    const token = await this.auth.accessToken();
    const response = await send(token);
    if (response.status !== 401 || !token) return response;
    const body = (await response.clone().json().catch(() => null)) as { error?: { code?: string } } | null;
    if (body?.error?.code !== 'invalid_token') return response;
    const fresh = await this.auth.refresh().catch(() => null);
    return fresh ? send(fresh.access_token) : response;
  }

  /** A JSON call to the app; errors become KilnClientError. */
  async request<T>(method: string, path: string, body?: unknown, token?: string | null): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await this.doFetch(this.url(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const json = text ? JSON.parse(text) : {};
    if (!response.ok) {
      const error = json?.error ?? {};
      throw new KilnClientError(response.status, error.code ?? 'unknown', error.message ?? text, error.reason);
    }
    return json as T;
  }
}

const AUTH = '/_kiln/auth';

export class Auth {
  private session: Session | null | undefined = undefined;
  private refreshing: Promise<Session> | null = null;
  private listeners = new Set<Listener>();

  constructor(
    private readonly client: KilnClient,
    private readonly store: SessionStore,
    private readonly margin: number,
  ) {}

  /** The current session (loaded from the store on first use). */
  async current(): Promise<Session | null> {
    if (this.session === undefined) this.session = (await this.store.load()) ?? null;
    return this.session;
  }

  /** Called with the new session on every sign-in, refresh and sign-out. */
  onChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async set(session: Session | null): Promise<Session | null> {
    this.session = session;
    await this.store.save(session);
    for (const listener of this.listeners) listener(session);
    return session;
  }

  private async signedIn(answer: Session | SecondFactorRequired): Promise<Session | SecondFactorRequired> {
    if ('mfa_required' in answer) return answer;
    await this.set(answer);
    return answer;
  }

  async signUp(input: { email: string; password: string; data?: Record<string, unknown> }): Promise<Session> {
    const session = await this.client.request<Session>('POST', `${AUTH}/signup`, input);
    await this.set(session);
    return session;
  }

  /** A password sign-in; a user with a second factor gets a challenge for `verifySecondFactor`. */
  async signIn(input: { email: string; password: string }): Promise<Session | SecondFactorRequired> {
    return this.signedIn(await this.client.request('POST', `${AUTH}/signin`, input));
  }

  async verifySecondFactor(input: { challenge: string; code?: string; recoveryCode?: string }): Promise<Session> {
    const body = { challenge: input.challenge, code: input.code, recovery_code: input.recoveryCode };
    const session = await this.client.request<Session>('POST', `${AUTH}/mfa/verify`, body);
    await this.set(session);
    return session;
  }

  async signInAnonymously(data?: Record<string, unknown>): Promise<Session> {
    const session = await this.client.request<Session>('POST', `${AUTH}/anonymous`, { data });
    await this.set(session);
    return session;
  }

  /** Native sign-in with the id_token a provider's SDK returned, and the nonce given to it. */
  async signInWithIdToken(input: { provider: string; idToken: string; nonce: string }): Promise<Session | SecondFactorRequired> {
    const token = (await this.current())?.access_token;
    const body = { id_token: input.idToken, nonce: input.nonce };
    return this.signedIn(await this.client.request('POST', `${AUTH}/oidc/${encodeURIComponent(input.provider)}/token`, body, token));
  }

  /**
   * The URL that starts the web code flow; in a browser, go there
   * (`location.assign`). The provider comes back to `redirectTo`, where
   * `handleRedirect` reads the tokens from the fragment.
   */
  redirectUrl(input: { provider: string; redirectTo: string }): string {
    const query = new URLSearchParams({ redirect_to: input.redirectTo });
    return this.client.url(`${AUTH}/oidc/${encodeURIComponent(input.provider)}/start?${query}`);
  }

  /** Reads a code-flow result from a URL's fragment (`location.href` by default). */
  async handleRedirect(url?: string): Promise<Session | SecondFactorRequired | null> {
    const href = url ?? (globalThis as { location?: Location }).location?.href ?? '';
    const fragment = href.split('#')[1];
    if (!fragment) return null;
    const values = Object.fromEntries(new URLSearchParams(fragment));
    if (values.mfa_required === 'true') {
      return { mfa_required: true, challenge: values.challenge, methods: ['totp', 'recovery_code'], expires_in: Number(values.expires_in) };
    }
    if (!values.access_token || !values.refresh_token) return null;
    const partial = {
      access_token: values.access_token,
      refresh_token: values.refresh_token,
      expires_at: Number(values.expires_at),
      session_id: values.session_id,
    };
    const { user } = await this.client.request<{ user: User }>('GET', `${AUTH}/user`, undefined, partial.access_token);
    const session: Session = { ...partial, user };
    await this.set(session);
    return session;
  }

  /** The access token, refreshed first when it expires within the margin; null when signed out. */
  async accessToken(): Promise<string | null> {
    const session = await this.current();
    if (!session) return null;
    if (session.expires_at - Date.now() / 1000 > this.margin) return session.access_token;
    return (await this.refresh()).access_token;
  }

  /** Trades the refresh token for new tokens; concurrent calls share one request. */
  refresh(): Promise<Session> {
    this.refreshing ??= (async () => {
      try {
        const session = await this.current();
        if (!session) throw new KilnClientError(401, 'sign_in_required', 'not signed in');
        const fresh = await this.client.request<Session>('POST', `${AUTH}/refresh`, { refresh_token: session.refresh_token });
        await this.set(fresh);
        return fresh;
      } catch (err) {
        // A refused refresh token (revoked, reused, expired) ends the session here too.
        if (err instanceof KilnClientError && err.status === 401) await this.set(null);
        throw err;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Ends this session, or every session of the user. */
  async signOut(options: { everywhere?: boolean } = {}): Promise<void> {
    const token = await this.accessToken().catch(() => null);
    if (token) {
      await this.client
        .request('POST', `${AUTH}/signout`, { everywhere: Boolean(options.everywhere) }, token)
        .catch(() => undefined);
    }
    await this.set(null);
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const token = await this.accessToken();
    if (!token) throw new KilnClientError(401, 'sign_in_required', 'not signed in');
    return this.client.request<T>(method, `${AUTH}${path}`, body, token);
  }

  async user(): Promise<User> {
    return (await this.call<{ user: User }>('GET', '/user')).user;
  }

  async updateUser(data: Record<string, unknown>): Promise<User> {
    return (await this.call<{ user: User }>('PATCH', '/user', { data })).user;
  }

  async changePassword(currentPassword: string, newPassword: string): Promise<void> {
    await this.call('POST', '/password', { current_password: currentPassword, new_password: newPassword });
  }

  async sessions(): Promise<SessionInfo[]> {
    return (await this.call<{ sessions: SessionInfo[] }>('GET', '/sessions')).sessions;
  }

  async revokeSession(id: string): Promise<void> {
    await this.call('DELETE', `/sessions/${encodeURIComponent(id)}`);
  }
}

/** A client for the app at `url`. */
export function createClient(url: string, options: Omit<ClientOptions, 'url'> = {}): KilnClient {
  return new KilnClient({ url, ...options });
}
