// @kiln/sdk: write Kiln functions in JavaScript or TypeScript.
export { db, Collection, Query } from './src/database.js';
export { auth } from './src/auth.js';
export { config } from './src/config.js';
export { scheduler } from './src/scheduler.js';
export { storage } from './src/storage.js';
export { KilnError, ERROR_CODES } from './src/errors.js';
