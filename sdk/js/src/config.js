// The function's variables from kiln.toml.
import * as wit from 'kiln:platform/config@0.1.0';
import { hostCall } from './errors.js';

export const config = {
  /** The variable's value, or undefined when it is not set. */
  get(name) {
    return hostCall(`config.get(${JSON.stringify(name)})`, () => wit.get(String(name)));
  },
  /** Every variable, as a plain object. */
  all() {
    return Object.fromEntries(hostCall('config.all()', () => wit.getAll()));
  },
};

/**
 * The `env` of a fetch or scheduled handler, as on Workers: the variables,
 * read from the host only when a handler touches them.
 */
export function lazyEnv() {
  let all;
  const load = () => (all ??= config.all());
  return new Proxy(
    {},
    {
      get: (_, name) => (typeof name === 'string' ? load()[name] : undefined),
      has: (_, name) => typeof name === 'string' && name in load(),
      ownKeys: () => Object.keys(load()),
      getOwnPropertyDescriptor: (_, name) =>
        typeof name === 'string' && name in load()
          ? { value: load()[name], enumerable: true, configurable: true, writable: false }
          : undefined,
    },
  );
}
