/** An error answer of the app, with Kiln's stable code. */
export class KilnClientError extends Error {
  readonly status: number;
  readonly code: string;
  /** The app's own code, where it gave one (a write hook's refusal). */
  readonly reason?: string;
  constructor(status: number, code: string, message: string, reason?: string) {
    super(message);
    this.name = 'KilnClientError';
    this.status = status;
    this.code = code;
    this.reason = reason;
  }
}

/** The error of a failed response: Kiln's JSON error, else the text. */
export async function failure(response: Response): Promise<KilnClientError> {
  const text = await response.text().catch(() => '');
  let error: { code?: string; message?: string; reason?: string } = {};
  try {
    error = JSON.parse(text)?.error ?? {};
  } catch {
    // not Kiln's JSON (a proxy's page): keep the text
  }
  return new KilnClientError(response.status, error.code ?? 'unknown', error.message ?? (text || response.statusText), error.reason);
}
