import { describe, expect, it, vi } from 'vitest';
import { chatChunk, FINAL_TIMINGS, jsonResponse, streamedResponse } from '../test/fixtures';
import { apiKeyStore } from './apiKey';
import { ChatError, hintOf, readChatData, streamChat, type ChatUpdate } from './chat';

type Stream = ReturnType<typeof streamedResponse>;

/** A fetch that answers with a stream the test writes, and remembers what it was asked. */
function streamingFetch() {
  const streams: Stream[] = [];
  const fetchImpl = vi.fn(async (_url: string, init?: RequestInit) => {
    const stream = streamedResponse({ signal: init?.signal ?? null });
    streams.push(stream);
    return stream.response;
  });
  return { fetchImpl, stream: () => streams[streams.length - 1] as Stream };
}

/** Let the reader take what was pushed. */
const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('readChatData', () => {
  it('reads a content chunk', () => {
    expect(readChatData('{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}')).toEqual({
      kind: 'chunk',
      content: 'hi',
      finishReason: null,
      timings: null,
    });
  });

  it('reads the last chunk with its timings', () => {
    const data = JSON.stringify({ choices: [{ delta: {}, finish_reason: 'length' }], timings: FINAL_TIMINGS });
    expect(readChatData(data)).toEqual({ kind: 'chunk', content: '', finishReason: 'length', timings: FINAL_TIMINGS });
  });

  it('reads [DONE], an error event, and garbage', () => {
    expect(readChatData('[DONE]')).toEqual({ kind: 'done' });
    expect(readChatData('{"error":{"message":"queue full","type":"rate_limit_error","code":429}}')).toEqual({
      kind: 'error',
      message: 'queue full',
      type: 'rate_limit_error',
      code: 429,
    });
    expect(readChatData('{"choices": [')).toMatchObject({ kind: 'invalid' });
    expect(readChatData('[1, 2]')).toMatchObject({ kind: 'invalid' });
  });
});

describe('hintOf', () => {
  it('drops the llamaherd prefix and ignores empty comments', () => {
    expect(hintOf('llamaherd: loading coder, 3.1 s')).toBe('loading coder, 3.1 s');
    expect(hintOf('queued, position 4')).toBe('queued, position 4');
    expect(hintOf('')).toBeNull();
    expect(hintOf('llamaherd: ')).toBeNull();
  });
});

describe('streamChat', () => {
  it('posts a streaming request and reports hints, tokens and timings as they come', async () => {
    const { fetchImpl, stream } = streamingFetch();
    const updates: ChatUpdate[] = [];
    const done = streamChat(
      { model: 'coder', messages: [{ role: 'user', content: 'hi' }], maxTokens: 32, fetchImpl },
      (u) => updates.push(u),
    );
    await flush();
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    const [url, init] = fetchImpl.mock.calls[0] as [string, RequestInit];
    expect(url).toBe('/v1/chat/completions');
    expect(init.method).toBe('POST');
    expect(JSON.parse(String(init.body))).toEqual({
      model: 'coder',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      max_tokens: 32,
    });

    stream().push(': llamaherd: loading coder, 1.0 s\n\n');
    await flush();
    expect(updates).toEqual([{ kind: 'hint', text: 'loading coder, 1.0 s' }]);

    // A token split in the middle of its event.
    const first = chatChunk('Hel');
    stream().push(chatChunk(null, { choices: [{ index: 0, delta: { role: 'assistant' } }] }) + first.slice(0, 20));
    await flush();
    expect(updates).toHaveLength(1);
    stream().push(first.slice(20) + chatChunk('lo'));
    await flush();
    expect(updates.slice(1)).toEqual([
      { kind: 'token', content: 'Hel' },
      { kind: 'token', content: 'lo' },
    ]);

    stream().push(chatChunk(null, { timings: FINAL_TIMINGS }) + 'data: [DONE]\n\n');
    const outcome = await done;
    expect(outcome).toEqual({ content: 'Hello', chunks: 2, timings: FINAL_TIMINGS, finishReason: null });
    expect(updates[updates.length - 1]).toEqual({ kind: 'timings', timings: FINAL_TIMINGS });
  });

  it("rejects with the HTTP error body's message", async () => {
    const fetchImpl = vi.fn(async () =>
      jsonResponse(
        { error: { message: "The model 'zzz' does not exist", type: 'invalid_request_error', code: 'model_not_found' } },
        404,
      ),
    );
    const error = await streamChat({ model: 'zzz', messages: [], fetchImpl }, () => {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChatError);
    expect(error).toMatchObject({ status: 404, type: 'invalid_request_error', message: "The model 'zzz' does not exist" });
  });

  it('rejects with a plain HTTP error when the body is not an error object', async () => {
    const fetchImpl = vi.fn(async () => new Response('upstream went away', { status: 502, statusText: 'Bad Gateway' }));
    await expect(streamChat({ model: 'a', messages: [], fetchImpl }, () => {})).rejects.toMatchObject({
      status: 502,
      message: 'HTTP 502: Bad Gateway',
    });
  });

  it('rejects with the error event of a started stream', async () => {
    const { fetchImpl, stream } = streamingFetch();
    const updates: ChatUpdate[] = [];
    const done = streamChat({ model: 'a', messages: [], fetchImpl }, (u) => updates.push(u));
    await flush();
    stream().push(': llamaherd: queued, position 2\n\n');
    stream().push('data: {"error":{"message":"waited 120 s in the queue","type":"service_unavailable","code":503}}\n\n');
    await expect(done).rejects.toMatchObject({ name: 'ChatError', message: 'waited 120 s in the queue', type: 'service_unavailable' });
    expect(updates).toEqual([{ kind: 'hint', text: 'queued, position 2' }]);
  });

  it('rejects when the stream ends before [DONE] or breaks off', async () => {
    const { fetchImpl, stream } = streamingFetch();
    const cut = streamChat({ model: 'a', messages: [], fetchImpl }, () => {});
    await flush();
    stream().push(chatChunk('partial'));
    stream().close();
    await expect(cut).rejects.toMatchObject({ type: 'incomplete' });

    const broken = streamChat({ model: 'a', messages: [], fetchImpl }, () => {});
    await flush();
    stream().fail(new TypeError('network error'));
    await expect(broken).rejects.toMatchObject({ type: 'network', message: 'The stream broke off: network error' });
  });

  it('rejects when llamaherd cannot be reached', async () => {
    const fetchImpl = vi.fn(async () => {
      throw new TypeError('Failed to fetch');
    });
    await expect(streamChat({ model: 'a', messages: [], fetchImpl }, () => {})).rejects.toMatchObject({
      status: 0,
      type: 'network',
      message: 'Cannot reach llamaherd: Failed to fetch',
    });
  });

  it('stops reading when aborted, with the AbortError, and lets go of the stream', async () => {
    const { fetchImpl, stream } = streamingFetch();
    const controller = new AbortController();
    const updates: ChatUpdate[] = [];
    const done = streamChat({ model: 'a', messages: [], fetchImpl, signal: controller.signal }, (u) => updates.push(u));
    await flush();
    stream().push(chatChunk('one'));
    await flush();
    controller.abort();
    const error = await done.catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(ChatError);
    expect(error).toMatchObject({ name: 'AbortError' });
    expect(updates).toEqual([{ kind: 'token', content: 'one' }]);
    // The request was made with that signal: aborting it is what closes the connection.
    expect((fetchImpl.mock.calls[0] as [string, RequestInit])[1].signal).toBe(controller.signal);
  });

  it("sends the tab's API key as a Bearer header, and none without one", async () => {
    const fetchImpl = vi.fn(async () => jsonResponse({ error: { message: 'stop here', type: 'x' } }, 400));
    const headers = (n: number) => new Headers((fetchImpl.mock.calls[n] as unknown as [string, RequestInit])[1].headers);
    await streamChat({ model: 'a', messages: [], fetchImpl }, () => {}).catch(() => {});
    expect(headers(0).has('authorization')).toBe(false);
    apiKeyStore.use('admin-key-0123456789');
    await streamChat({ model: 'a', messages: [], fetchImpl }, () => {}).catch(() => {});
    expect(headers(1).get('authorization')).toBe('Bearer admin-key-0123456789');
    expect(headers(1).get('content-type')).toBe('application/json');
  });

  it('reports a refused key to the key store', async () => {
    apiKeyStore.use('revoked-key-0123456789');
    const body = { error: { message: 'Unknown API key.', type: 'invalid_request_error', code: 'invalid_api_key' } };
    const fetchImpl = vi.fn(async () => jsonResponse(body, 401));
    await expect(streamChat({ model: 'a', messages: [], fetchImpl }, () => {})).rejects.toMatchObject({
      status: 401,
      message: 'Unknown API key.',
    });
    expect(apiKeyStore.snapshot().problem).toEqual({ code: 'invalid_api_key', message: 'Unknown API key.' });
  });
});
