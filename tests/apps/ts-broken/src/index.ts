import type { Handlers } from '@kiln/sdk';

function double(n: number): number {
  return n * 2;
}

export default {
  async fetch() {
    return Response.json({ doubled: double('two') });
  },
} satisfies Handlers;
