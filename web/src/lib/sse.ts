/**
 * A server-sent events parser as a pure function: state and bytes in, new state and events
 * out. Chunks may split the stream at any byte (inside a line, a CRLF, or a UTF-8 sequence):
 * bytes are cut into lines first and only whole lines are decoded, which is safe because the
 * bytes of CR and LF never occur inside a multi-byte UTF-8 sequence.
 *
 * Follows the WHATWG rules that matter for OpenAI-style streams: lines end in LF, CR or CRLF;
 * `field: value` loses one space after the colon; `data` lines of one event are joined with
 * LF; a blank line ends the event (none is sent when it had no data); a line that starts with
 * a colon is a comment. Unlike EventSource, comments are returned too: llamaherd says in them
 * why a request waits (`: llamaherd: loading coder, 3.1 s`).
 */

export type SseEvent =
  | { kind: 'message'; event: string; data: string; id: string | null }
  | { kind: 'comment'; text: string };

export interface SseState {
  /** Bytes of a line not ended yet. */
  readonly partial: Uint8Array;
  /** The previous chunk ended with CR: an LF at the start of the next one belongs to it. */
  readonly afterCR: boolean;
  readonly data: readonly string[];
  readonly event: string;
  readonly id: string | null;
}

export const SSE_START: SseState = {
  partial: new Uint8Array(0),
  afterCR: false,
  data: [],
  event: '',
  id: null,
};

const LF = 0x0a;
const CR = 0x0d;
const decoder = new TextDecoder('utf-8');

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

interface Fields {
  data: string[];
  event: string;
  id: string | null;
}

/** One whole line: updates the event being built, or ends it. */
function takeLine(line: string, fields: Fields, out: SseEvent[]): void {
  if (line === '') {
    if (fields.data.length > 0) {
      out.push({ kind: 'message', event: fields.event || 'message', data: fields.data.join('\n'), id: fields.id });
    }
    fields.data = [];
    fields.event = '';
    return;
  }
  if (line.startsWith(':')) {
    const text = line.slice(1);
    out.push({ kind: 'comment', text: text.startsWith(' ') ? text.slice(1) : text });
    return;
  }
  const colon = line.indexOf(':');
  const name = colon < 0 ? line : line.slice(0, colon);
  let value = colon < 0 ? '' : line.slice(colon + 1);
  if (value.startsWith(' ')) value = value.slice(1);
  if (name === 'data') fields.data = [...fields.data, value];
  else if (name === 'event') fields.event = value;
  else if (name === 'id' && !value.includes('\0')) fields.id = value;
  // `retry` and unknown fields mean nothing to a fetch reader.
}

/** Feed a chunk of the stream; returns the state after it and the events it completed. */
export function parseSse(state: SseState, chunk: Uint8Array): { state: SseState; events: SseEvent[] } {
  const events: SseEvent[] = [];
  const fields: Fields = { data: [...state.data], event: state.event, id: state.id };
  let bytes = chunk;
  let afterCR = state.afterCR;
  if (afterCR && bytes.length > 0) {
    if (bytes[0] === LF) bytes = bytes.subarray(1);
    afterCR = false;
  }
  const buffer = concat(state.partial, bytes);
  let start = 0;
  for (let i = 0; i < buffer.length; i += 1) {
    const byte = buffer[i];
    if (byte !== LF && byte !== CR) continue;
    takeLine(decoder.decode(buffer.subarray(start, i)), fields, events);
    if (byte === CR) {
      if (i + 1 < buffer.length) {
        if (buffer[i + 1] === LF) i += 1;
      } else {
        afterCR = true;
      }
    }
    start = i + 1;
  }
  const partial = buffer.slice(start);
  return { state: { partial, afterCR, data: fields.data, event: fields.event, id: fields.id }, events };
}
