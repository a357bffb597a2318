// The app's users. The host verifies every request's bearer token before
// the function runs; `auth.currentUser()` is who made the request.
import * as wit from 'kiln:platform/auth@0.1.0';
import { hostCall, invalidInput } from './errors.js';

/** A WIT user as the SDK hands it out: camelCase, `data` parsed, a Date. */
function user(u) {
  let data;
  try {
    data = JSON.parse(u.data);
  } catch {
    data = {};
  }
  return {
    id: u.id,
    email: u.email ?? null,
    emailVerified: u.emailVerified,
    roles: [...u.roles],
    data,
    disabled: u.disabled,
    anonymous: u.anonymous,
    mfaEnabled: u.mfaEnabled,
    createdAt: new Date(Number(u.createdMs)),
  };
}

function profile(data, what) {
  if (data === undefined) return '';
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw invalidInput(`${what}: \`data\` is a plain object`);
  }
  return JSON.stringify(data);
}

export const auth = {
  /** The verified caller, or null without a token (and in cron and job runs). */
  async currentUser() {
    const identity = hostCall('auth.currentUser()', () => wit.currentUser());
    if (!identity) return null;
    return { user: user(identity.user), sessionId: identity.sessionId, mfa: identity.mfa };
  },
  async getUser(id) {
    const found = hostCall('auth.getUser', () => wit.getUser(String(id)));
    return found ? user(found) : null;
  },
  /** Looks a user up by email (compared case-folded). */
  async findUserByEmail(email) {
    const found = hostCall('auth.findUserByEmail', () => wit.findUserByEmail(String(email)));
    return found ? user(found) : null;
  },
  /** Users in creation order: at most `limit` (up to 100) after the id `after`. */
  async listUsers({ after, limit = 50 } = {}) {
    return hostCall('auth.listUsers', () => wit.listUsers(after ?? undefined, limit)).map(user);
  },
  async createUser({ email, password, data }) {
    const text = profile(data, 'auth.createUser');
    return user(hostCall('auth.createUser', () => wit.createUser(String(email), String(password), text)));
  },
  /** Replaces the user's profile data. */
  async updateData(id, data) {
    const text = profile(data, 'auth.updateData');
    return user(hostCall('auth.updateData', () => wit.updateData(String(id), text)));
  },
  /** Replaces the user's roles; effective on their next request. */
  async setRoles(id, roles) {
    return user(hostCall('auth.setRoles', () => wit.setRoles(String(id), roles.map(String))));
  },
  /** Disables (signing them out everywhere) or re-enables the user. */
  async setDisabled(id, disabled) {
    return user(hostCall('auth.setDisabled', () => wit.setDisabled(String(id), Boolean(disabled))));
  },
  async deleteUser(id) {
    hostCall('auth.deleteUser', () => wit.deleteUser(String(id)));
  },
  /** Revokes every session of the user; resolves to how many. */
  async revokeSessions(id) {
    return hostCall('auth.revokeSessions', () => wit.revokeSessions(String(id)));
  },
};
