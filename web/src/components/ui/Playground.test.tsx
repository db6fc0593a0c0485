import { act, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { chatChunk, FINAL_TIMINGS, jsonResponse, streamedResponse, TWO_MODELS } from '../../test/fixtures';
import { Playground, chatHistory, parseMaxTokens, type Exchange } from './Playground';

type Stream = ReturnType<typeof streamedResponse>;

/** A fetch that answers each request with a stream the test writes. */
function streamingFetch() {
  const streams: Stream[] = [];
  const fetchImpl = vi.fn(async (_url: string, init?: RequestInit) => {
    const stream = streamedResponse({ signal: init?.signal ?? null });
    streams.push(stream);
    return stream.response;
  });
  const stream = () => {
    const last = streams[streams.length - 1];
    if (!last) throw new Error('no request yet');
    return last;
  };
  const body = (n: number) => JSON.parse(String((fetchImpl.mock.calls[n] as [string, RequestInit])[1].body)) as {
    model: string;
    messages: { role: string; content: string }[];
    max_tokens: number;
  };
  return { fetchImpl, stream, body };
}

async function push(stream: Stream, text: string) {
  await act(async () => {
    stream.push(text);
    await new Promise((resolve) => setTimeout(resolve, 0));
  });
}

function renderPlayground(fetchImpl: ReturnType<typeof streamingFetch>['fetchImpl'] | ((...a: never[]) => unknown)) {
  return render(<Playground models={TWO_MODELS} defaultId="a" maxTokens={64} fetchImpl={fetchImpl as never} />);
}

async function say(user: ReturnType<typeof userEvent.setup>, text: string) {
  await user.type(screen.getByTestId('playground-input'), text);
  await user.click(screen.getByTestId('playground-send'));
}

describe('Playground', () => {
  it('streams the answer token by token, with the wait explained, then the speed', async () => {
    const user = userEvent.setup();
    const { fetchImpl, stream, body } = streamingFetch();
    renderPlayground(fetchImpl);
    expect(screen.getByTestId('playground-model')).toHaveValue('a');

    await say(user, 'Hello there');
    expect(body(0)).toEqual({ model: 'a', messages: [{ role: 'user', content: 'Hello there' }], stream: true, max_tokens: 64 });
    expect(screen.getByTestId('playground-prompt')).toHaveTextContent('Hello there');
    expect(screen.getByTestId('playground-input')).toHaveValue('');
    expect(screen.getByTestId('playground-hint')).toHaveTextContent('waiting for the first token…');
    expect(screen.queryByTestId('playground-send')).not.toBeInTheDocument();
    expect(screen.getByTestId('playground-stop')).toBeEnabled();
    expect(screen.getByTestId('playground-model')).toBeDisabled();

    await push(stream(), ': llamaherd: loading a, 1.0 s\n\n');
    expect(screen.getByTestId('playground-hint')).toHaveTextContent(/^loading a, 1\.0 s$/);
    await push(stream(), ': llamaherd: loading a, 2.0 s\n\n');
    expect(screen.getByTestId('playground-hint')).toHaveTextContent(/^loading a, 2\.0 s$/);

    await push(stream(), chatChunk('Hi'));
    expect(screen.getByTestId('playground-answer')).toHaveTextContent(/^Hi$/);
    expect(screen.queryByTestId('playground-hint')).not.toBeInTheDocument();
    expect(screen.getByTestId('playground-tokens')).toHaveTextContent('1 token');
    // A token cut in two by the network shows once whole.
    const second = chatChunk(', you');
    await push(stream(), second.slice(0, 25));
    expect(screen.getByTestId('playground-answer')).toHaveTextContent(/^Hi$/);
    await push(stream(), second.slice(25));
    expect(screen.getByTestId('playground-answer')).toHaveTextContent(/^Hi, you$/);
    expect(screen.queryByTestId('playground-tps')).not.toBeInTheDocument();

    await push(stream(), chatChunk(null, { timings: FINAL_TIMINGS }) + 'data: [DONE]\n\n');
    await waitFor(() => expect(screen.getByTestId('playground-exchange')).toHaveAttribute('data-status', 'done'));
    expect(screen.getByTestId('playground-tps')).toHaveTextContent('10.7 tokens/s');
    // The count is llama-server's, not the chunks seen.
    expect(screen.getByTestId('playground-tokens')).toHaveTextContent('20 tokens');
    expect(screen.getByTestId('playground-send')).toBeInTheDocument();
  });

  it('stops: aborts the request and keeps what came', async () => {
    const user = userEvent.setup();
    const { fetchImpl, stream } = streamingFetch();
    renderPlayground(fetchImpl);
    await say(user, 'Count to a million');
    await push(stream(), chatChunk('one two'));
    const signal = (fetchImpl.mock.calls[0] as [string, RequestInit])[1].signal as AbortSignal;
    expect(signal.aborted).toBe(false);

    await user.click(screen.getByTestId('playground-stop'));
    expect(signal.aborted).toBe(true);
    await waitFor(() => expect(screen.getByTestId('playground-exchange')).toHaveAttribute('data-status', 'stopped'));
    expect(screen.getByTestId('playground-answer')).toHaveTextContent('one two');
    expect(screen.getByTestId('playground-stats')).toHaveTextContent(/^stopped · 1 token · a$/);
    expect(screen.queryByTestId('playground-error')).not.toBeInTheDocument();
    expect(screen.getByTestId('playground-send')).toBeInTheDocument();
  });

  it("shows an HTTP error's message", async () => {
    const user = userEvent.setup();
    const fetchImpl = vi.fn(async () =>
      jsonResponse({ error: { message: 'queue of a is full (64 waiting)', type: 'rate_limit_error', code: 429 } }, 429),
    );
    renderPlayground(fetchImpl);
    await say(user, 'hi');
    expect(await screen.findByTestId('playground-error')).toHaveTextContent('HTTP 429: queue of a is full (64 waiting)');
    expect(screen.getByTestId('playground-exchange')).toHaveAttribute('data-status', 'error');
    expect(screen.getByTestId('playground-send')).toBeInTheDocument();
  });

  it("shows the stream's error event", async () => {
    const user = userEvent.setup();
    const { fetchImpl, stream } = streamingFetch();
    renderPlayground(fetchImpl);
    await say(user, 'hi');
    await push(stream(), ': llamaherd: queued, position 3\n\n');
    await push(stream(), 'data: {"error":{"message":"llama-server for model a crashed","type":"server_error"}}\n\n');
    expect(await screen.findByTestId('playground-error')).toHaveTextContent(/^llama-server for model a crashed$/);
    expect(screen.queryByTestId('playground-hint')).not.toBeInTheDocument();
  });

  it('keeps the conversation: later requests carry the answered exchanges, to the chosen model', async () => {
    const user = userEvent.setup();
    const { fetchImpl, stream, body } = streamingFetch();
    renderPlayground(fetchImpl);
    await say(user, 'first');
    await push(stream(), chatChunk('answer one') + 'data: [DONE]\n\n');
    await waitFor(() => expect(screen.getByTestId('playground-send')).toBeInTheDocument());

    await user.selectOptions(screen.getByTestId('playground-model'), 'b');
    // Enter sends as well.
    await user.type(screen.getByTestId('playground-input'), 'second{Enter}');
    expect(body(1)).toMatchObject({
      model: 'b',
      messages: [
        { role: 'user', content: 'first' },
        { role: 'assistant', content: 'answer one' },
        { role: 'user', content: 'second' },
      ],
    });
    await push(stream(), 'data: [DONE]\n\n');
    await waitFor(() => expect(screen.getAllByTestId('playground-exchange')).toHaveLength(2));

    await user.click(screen.getByTestId('playground-clear'));
    expect(screen.queryAllByTestId('playground-exchange')).toHaveLength(0);
    await say(user, 'fresh');
    expect(body(2).messages).toEqual([{ role: 'user', content: 'fresh' }]);
  });

  it('sends nothing empty, and nothing without a model', async () => {
    const user = userEvent.setup();
    const fetchImpl = vi.fn();
    const { rerender } = renderPlayground(fetchImpl);
    expect(screen.getByTestId('playground-send')).toBeDisabled();
    await user.type(screen.getByTestId('playground-input'), '   {Enter}');
    expect(fetchImpl).not.toHaveBeenCalled();

    rerender(<Playground models={[]} defaultId={null} fetchImpl={fetchImpl} />);
    await user.type(screen.getByTestId('playground-input'), 'hello{Enter}');
    expect(screen.getByTestId('playground-send')).toBeDisabled();
    expect(fetchImpl).not.toHaveBeenCalled();
  });

  it('sends the max tokens set, and nothing while it is not a whole number in range', async () => {
    const user = userEvent.setup();
    const { fetchImpl, body } = streamingFetch();
    renderPlayground(fetchImpl);
    const field = screen.getByTestId('playground-max-tokens');
    expect(field).toHaveValue('64');
    await user.clear(field);
    await user.type(field, '0');
    await user.type(screen.getByTestId('playground-input'), 'hi');
    expect(screen.getByTestId('playground-send')).toBeDisabled();
    expect(field).toHaveAttribute('aria-invalid', 'true');
    await user.type(field, '8');
    expect(screen.getByTestId('playground-send')).toBeEnabled();
    await user.click(screen.getByTestId('playground-send'));
    expect(body(0).max_tokens).toBe(8);
  });

  it('falls back to the default model when the chosen one goes away', async () => {
    const user = userEvent.setup();
    const { rerender } = renderPlayground(vi.fn());
    await user.selectOptions(screen.getByTestId('playground-model'), 'b');
    expect(screen.getByTestId('playground-model')).toHaveValue('b');
    rerender(<Playground models={TWO_MODELS.slice(0, 1)} defaultId="a" />);
    expect(screen.getByTestId('playground-model')).toHaveValue('a');
  });

  it('aborts its request when it leaves the page', async () => {
    const user = userEvent.setup();
    const { fetchImpl } = streamingFetch();
    const { unmount } = renderPlayground(fetchImpl);
    await say(user, 'hi');
    const signal = (fetchImpl.mock.calls[0] as [string, RequestInit])[1].signal as AbortSignal;
    unmount();
    expect(signal.aborted).toBe(true);
  });
});

describe('parseMaxTokens', () => {
  it.each([
    ['256', 256],
    [' 8 ', 8],
    ['1', 1],
    ['32768', 32768],
    ['0', null],
    ['32769', null],
    ['1.5', null],
    ['-3', null],
    ['', null],
    ['ten', null],
  ])('%j is %s', (text, expected) => {
    expect(parseMaxTokens(text)).toBe(expected);
  });
});

describe('chatHistory', () => {
  const exchange = (status: Exchange['status'], prompt: string, answer: string): Exchange => ({
    id: 1,
    model: 'a',
    prompt,
    answer,
    status,
    error: null,
    hint: null,
    chunks: 0,
    timings: null,
  });

  it('keeps answered exchanges (stopped ones too) and leaves out failed and empty ones', () => {
    expect(
      chatHistory(
        [exchange('done', 'q1', 'a1'), exchange('error', 'q2', ''), exchange('stopped', 'q3', 'a3'), exchange('stopped', 'q4', '')],
        'now',
      ),
    ).toEqual([
      { role: 'user', content: 'q1' },
      { role: 'assistant', content: 'a1' },
      { role: 'user', content: 'q3' },
      { role: 'assistant', content: 'a3' },
      { role: 'user', content: 'now' },
    ]);
  });
});
