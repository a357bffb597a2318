// Stack traces in the user's source. The bundler's source map is appended
// to the bundle at build time; a stack is mapped only when an error is
// reported, so a function that never fails pays nothing for it.
import { TraceMap, originalPositionFor } from '@jridgewell/trace-mapping';

const MAP = Symbol.for('kiln.sourceMap');
let traceMap;

function mapped() {
  if (traceMap === undefined) {
    const raw = globalThis[MAP];
    traceMap = raw ? new TraceMap(raw) : null;
  }
  return traceMap;
}

// SpiderMonkey frames: `name@file:line:column` (column 1-based).
const FRAME = /^(.*)@(.*):(\d+):(\d+)$/;

/** The error's stack with bundle positions replaced by source positions. */
export function sourceStack(err) {
  const stack = typeof err?.stack === 'string' ? err.stack : '';
  const map = mapped();
  if (!map) return stack;
  return stack
    .split('\n')
    // componentize-js's own glue around an export: not the user's code.
    .filter((line) => !line.includes('/sources/initializer.js:'))
    .map((line) => {
      const m = FRAME.exec(line);
      if (!m) return line;
      const pos = originalPositionFor(map, { line: Number(m[3]), column: Number(m[4]) - 1 });
      if (pos.source === null) return line;
      return `${pos.name ?? m[1]}@${pos.source}:${pos.line}:${pos.column + 1}`;
    })
    .join('\n');
}

/** `Name: message` and the source stack, for logs and run history. */
export function describeError(err) {
  if (!(err instanceof Error)) return typeof err === 'string' ? err : `uncaught ${safeString(err)}`;
  const head = `${err.name}${err.code ? ` [${err.code}]` : ''}: ${err.message}`;
  const stack = sourceStack(err).trimEnd();
  return stack ? `${head}\n${stack}` : head;
}

function safeString(value) {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
