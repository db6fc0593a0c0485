import { describe, expect, it } from 'vitest';
import { parseSse, SSE_START, type SseEvent, type SseState } from './sse';

const encode = (text: string) => new TextEncoder().encode(text);

/** Feed the chunks one after another; every event, in order, and the final state. */
function feed(chunks: Uint8Array[]): { events: SseEvent[]; state: SseState } {
  let state = SSE_START;
  const events: SseEvent[] = [];
  for (const chunk of chunks) {
    const out = parseSse(state, chunk);
    state = out.state;
    events.push(...out.events);
  }
  return { events, state };
}

const message = (data: string, event = 'message', id: string | null = null): SseEvent => ({
  kind: 'message',
  event,
  data,
  id,
});

// What llamaherd sends: a comment while the model loads, chunks with multi-byte characters
// (a 2-byte é, a 3-byte €, a 4-byte emoji), CRLF and CR line ends, two-line events, [DONE].
const STREAM = [
  ': llamaherd: loading coder, 1.0 s\n\n',
  ': llamaherd: loading coder, 2.0 s\n\n',
  'data: {"choices":[{"delta":{"content":"héllo €"}}]}\n\n',
  'data: {"choices":[{"delta":{"content":"🦙"}}]}\r\n\r\n',
  'event: note\rdata: first\rdata: second\r\r',
  'data: one\r\ndata: two\r\n\r\n',
  'id: 7\ndata:no-space\n\n',
  'data: [DONE]\n\n',
].join('');

const EXPECTED: SseEvent[] = [
  { kind: 'comment', text: 'llamaherd: loading coder, 1.0 s' },
  { kind: 'comment', text: 'llamaherd: loading coder, 2.0 s' },
  message('{"choices":[{"delta":{"content":"héllo €"}}]}'),
  message('{"choices":[{"delta":{"content":"🦙"}}]}'),
  message('first\nsecond', 'note'),
  message('one\ntwo'),
  message('no-space', 'message', '7'),
  message('[DONE]', 'message', '7'),
];

describe('parseSse', () => {
  it('reads a whole stream in one chunk', () => {
    const { events, state } = feed([encode(STREAM)]);
    expect(events).toEqual(EXPECTED);
    expect(state.partial).toHaveLength(0);
    expect(state.data).toEqual([]);
  });

  it('gives the same events however the bytes are split in two', () => {
    const bytes = encode(STREAM);
    for (let cut = 0; cut <= bytes.length; cut += 1) {
      const { events } = feed([bytes.slice(0, cut), bytes.slice(cut)]);
      expect(events, `split at byte ${cut}`).toEqual(EXPECTED);
    }
  });

  it('gives the same events one byte at a time', () => {
    const bytes = encode(STREAM);
    const { events } = feed(Array.from(bytes, (b) => Uint8Array.of(b)));
    expect(events).toEqual(EXPECTED);
  });

  it('gives the same events in random splits, empty chunks included', () => {
    const bytes = encode(STREAM);
    // A fixed-seed generator: the same splits on every run.
    let seed = 12345;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let round = 0; round < 200; round += 1) {
      const chunks: Uint8Array[] = [];
      let at = 0;
      while (at < bytes.length) {
        const size = Math.floor(random() * 12);
        chunks.push(bytes.slice(at, at + size));
        at += size;
      }
      expect(feed(chunks).events).toEqual(EXPECTED);
    }
  });

  it('holds an unfinished event until its blank line', () => {
    const first = parseSse(SSE_START, encode('data: {"a":1}\ndata: more'));
    expect(first.events).toEqual([]);
    expect(first.state.data).toEqual(['{"a":1}']);
    const second = parseSse(first.state, encode('\n\n'));
    expect(second.events).toEqual([message('{"a":1}\nmore')]);
  });

  it('treats a CR at the end of a chunk and an LF at the start of the next as one line end', () => {
    // Read as two line ends, the LF would be a blank line that ends the event after `x`.
    const { events } = feed([encode('data: x\r'), encode('\ndata: y\r'), encode(''), encode('\n\r'), encode('\n')]);
    expect(events).toEqual([message('x\ny')]);
  });

  it('sends no event for a blank line without data, and ignores unknown fields', () => {
    const { events } = feed([encode('\n\nevent: lonely\n\nretry: 100\nfoo: bar\n\ndata\n\n')]);
    // `data` with no colon is a data line with an empty value: an event of empty data.
    expect(events).toEqual([message('')]);
  });

  it('returns comments without their colon and one leading space', () => {
    const { events } = feed([encode(':\n:  two spaces\n:tight\n')]);
    expect(events).toEqual([
      { kind: 'comment', text: '' },
      { kind: 'comment', text: ' two spaces' },
      { kind: 'comment', text: 'tight' },
    ]);
  });

  it('never changes the state it was given', () => {
    const { state } = feed([encode('data: half')]);
    const partial = state.partial.slice();
    parseSse(state, encode('\n\n'));
    parseSse(state, encode(' more\n\n'));
    expect(state.partial).toEqual(partial);
    expect(state.data).toEqual([]);
    expect(parseSse(state, encode(' more\n\n')).events).toEqual([message('half more')]);
  });
});
