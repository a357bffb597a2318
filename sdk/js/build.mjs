#!/usr/bin/env node
// Builds a JavaScript Kiln function into a component with componentize-js.
// Usage: node build.mjs <source.js> <output.wasm>
//
// componentize-js imports every interface of the world it targets, so the
// world is made per function: the `kiln:platform` interfaces the source
// imports, plus wasi:http's proxy world (its fetch handler is the export).
import { componentize } from '@bytecodealliance/componentize-js';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const [source, output] = process.argv.slice(2);
if (!source || !output) {
  console.error('usage: node build.mjs <source.js> <output.wasm>');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const kilnWit = process.env.KILN_WIT_DIR ?? resolve(here, '../../wit');

/** The kiln:platform interfaces the source imports, e.g. ['config']. */
function platformImports(code) {
  const found = new Set();
  for (const m of code.matchAll(/['"]kiln:platform\/([a-z-]+)@[0-9.]+['"]/g)) found.add(m[1]);
  return [...found].sort();
}

/** Whether the source exports `scheduledHandler` (cron triggers and jobs call its `run`). */
function exportsScheduledHandler(code) {
  return /export\s+(const|let|var|function)\s+scheduledHandler\b/.test(code) ||
    /export\s*\{[^}]*\bscheduledHandler\b[^}]*\}/.test(code);
}

const witDir = await mkdtemp(join(tmpdir(), 'kiln-js-wit-'));
try {
  const code = await readFile(source, 'utf8');
  await cp(kilnWit, witDir, { recursive: true });
  const imports = platformImports(code).map((name) => `    import ${name};\n`).join('');
  const scheduled = exportsScheduledHandler(code) ? '    export scheduled-handler;\n' : '';
  await writeFile(
    join(witDir, 'js-function.wit'),
    `package kiln:platform@0.1.0;\n\nworld js-function {\n${imports}${scheduled}    include wasi:http/proxy@0.2.10;\n}\n`,
  );
  const { component } = await componentize({
    sourcePath: resolve(source),
    witPath: witDir,
    worldName: 'js-function',
  });
  await writeFile(output, component);
} catch (err) {
  console.error(`componentize-js: ${err.message ?? err}`);
  process.exitCode = 1;
} finally {
  await rm(witDir, { recursive: true, force: true });
}
