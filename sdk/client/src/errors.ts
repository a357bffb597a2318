/** An error answer of the app, with Kiln's stable code. */
export class KilnClientError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'KilnClientError';
    this.status = status;
    this.code = code;
  }
}
