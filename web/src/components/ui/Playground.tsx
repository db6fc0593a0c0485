import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import CircularProgress from '@mui/material/CircularProgress';
import Stack from '@mui/material/Stack';
import TextField from '@mui/material/TextField';
import Typography from '@mui/material/Typography';
import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import type { FetchLike } from '../../api/client';
import { ChatError, streamChat, type ChatUpdate } from '../../lib/chat';
import type { ChatMessage, ChatTimings, GatewayModel } from '../../types/gateway';

export interface PlaygroundProps {
  /** The models to choose from (the `llamaModels` list). */
  models: Pick<GatewayModel, 'id' | 'phase' | 'default'>[];
  /** Chosen until the user picks another; the first model when null. */
  defaultId: string | null;
  /** `max_tokens` of a request until the user sets another. */
  maxTokens?: number;
  /** Injected in tests; the global fetch otherwise. */
  fetchImpl?: FetchLike;
}

type ExchangeStatus = 'streaming' | 'done' | 'stopped' | 'error';

/** One question and its answer, as shown. */
export interface Exchange {
  id: number;
  model: string;
  prompt: string;
  answer: string;
  status: ExchangeStatus;
  error: string | null;
  /** The latest thing the gateway said about the wait (`loading coder, 3.1 s`). */
  hint: string | null;
  /** Content chunks received so far (about one token each). */
  chunks: number;
  timings: ChatTimings | null;
}

export const DEFAULT_MAX_TOKENS = 256;
const MAX_TOKENS_LIMIT = 32768;

/** The max tokens field's value as a request's `max_tokens`: a whole number in range, else null. */
export function parseMaxTokens(text: string): number | null {
  if (!/^\s*\d+\s*$/.test(text)) return null;
  const n = Number(text);
  return n >= 1 && n <= MAX_TOKENS_LIMIT ? n : null;
}

/** What the model is told: every earlier exchange that produced an answer, then the prompt. */
export function chatHistory(exchanges: readonly Exchange[], prompt: string): ChatMessage[] {
  const messages: ChatMessage[] = [];
  for (const x of exchanges) {
    if ((x.status === 'done' || x.status === 'stopped') && x.answer !== '') {
      messages.push({ role: 'user', content: x.prompt }, { role: 'assistant', content: x.answer });
    }
  }
  messages.push({ role: 'user', content: prompt });
  return messages;
}

function applyUpdate(x: Exchange, update: ChatUpdate): Exchange {
  switch (update.kind) {
    case 'hint':
      return { ...x, hint: update.text };
    case 'token':
      return { ...x, answer: x.answer + update.content, chunks: x.chunks + 1 };
    case 'timings':
      return { ...x, timings: update.timings };
  }
}

function Stats({ x }: { x: Exchange }) {
  const tokens = x.timings?.predicted_n ?? x.chunks;
  const rate = x.timings?.predicted_per_second;
  return (
    <Typography variant="caption" color="text.secondary" component="div" data-testid="playground-stats" sx={{ mt: 0.5 }}>
      {x.status === 'stopped' ? 'stopped · ' : null}
      <span data-testid="playground-tokens">
        {tokens} token{tokens === 1 ? '' : 's'}
      </span>
      {typeof rate === 'number' ? (
        <>
          {' · '}
          <span data-testid="playground-tps">{rate.toFixed(1)} tokens/s</span>
        </>
      ) : null}
      {` · ${x.model}`}
    </Typography>
  );
}

function ExchangeView({ x }: { x: Exchange }) {
  const waitingForFirst = x.status === 'streaming' && x.chunks === 0;
  return (
    <Box data-testid="playground-exchange" data-status={x.status}>
      <Box
        sx={{
          ml: 'auto',
          maxWidth: '85%',
          width: 'fit-content',
          bgcolor: 'action.selected',
          borderRadius: 2,
          px: 1.5,
          py: 0.75,
          whiteSpace: 'pre-wrap',
          wordBreak: 'break-word',
        }}
        data-testid="playground-prompt"
      >
        {x.prompt}
      </Box>
      <Box sx={{ mt: 1, maxWidth: '100%' }}>
        {waitingForFirst ? (
          <Stack direction="row" spacing={1} sx={{ alignItems: 'center' }}>
            <CircularProgress size={14} />
            <Typography variant="body2" color="text.secondary" data-testid="playground-hint">
              {x.hint ?? 'waiting for the first token…'}
            </Typography>
          </Stack>
        ) : null}
        {x.answer !== '' ? (
          <Box
            data-testid="playground-answer"
            sx={{ fontFamily: 'monospace', fontSize: '0.875rem', whiteSpace: 'pre-wrap', wordBreak: 'break-word' }}
          >
            {x.answer}
          </Box>
        ) : null}
        {x.status === 'error' ? (
          <Alert severity="error" sx={{ mt: 1, '& .MuiAlert-message': { minWidth: 0, wordBreak: 'break-word' } }} data-testid="playground-error">
            {x.error}
          </Alert>
        ) : null}
        {x.status === 'done' || x.status === 'stopped' || (x.status === 'streaming' && x.chunks > 0) ? <Stats x={x} /> : null}
      </Box>
    </Box>
  );
}

/**
 * A chat with one model through the gateway: the answer streams in token by token, the wait
 * before the first token says why it is slow (the gateway's SSE comments), and the last
 * chunk's timings give the speed. One exchange at a time; the conversation lives in memory
 * until Clear. Stop aborts the request: the connection closes and llamaherd frees the slot.
 */
export function Playground({ models, defaultId, maxTokens = DEFAULT_MAX_TOKENS, fetchImpl }: PlaygroundProps) {
  const [chosen, setChosen] = useState<string | null>(null);
  const [prompt, setPrompt] = useState('');
  const [maxTokensText, setMaxTokensText] = useState(String(maxTokens));
  const tokensLimit = parseMaxTokens(maxTokensText);
  const [exchanges, setExchanges] = useState<Exchange[]>([]);
  const abort = useRef<AbortController | null>(null);
  const nextId = useRef(1);

  const ids = models.map((m) => m.id);
  const fallback = defaultId !== null && ids.includes(defaultId) ? defaultId : (ids[0] ?? '');
  const model = chosen !== null && ids.includes(chosen) ? chosen : fallback;
  const streaming = exchanges.some((x) => x.status === 'streaming');

  // Leaving the page ends the request it started.
  useEffect(() => () => abort.current?.abort(), []);

  const send = async () => {
    const text = prompt.trim();
    if (streaming || text === '' || model === '' || tokensLimit === null) return;
    const id = nextId.current++;
    const messages = chatHistory(exchanges, text);
    const controller = new AbortController();
    abort.current = controller;
    const update = (change: (x: Exchange) => Exchange) =>
      setExchanges((list) => list.map((x) => (x.id === id ? change(x) : x)));
    setExchanges((list) => [
      ...list,
      { id, model, prompt: text, answer: '', status: 'streaming', error: null, hint: null, chunks: 0, timings: null },
    ]);
    setPrompt('');
    try {
      await streamChat({ model, messages, maxTokens: tokensLimit, signal: controller.signal, fetchImpl }, (u) =>
        update((x) => applyUpdate(x, u)),
      );
      update((x) => ({ ...x, status: 'done', hint: null }));
    } catch (err) {
      if (controller.signal.aborted) {
        update((x) => ({ ...x, status: 'stopped', hint: null }));
      } else {
        const message =
          err instanceof ChatError
            ? err.status > 0
              ? `HTTP ${err.status}: ${err.message}`
              : err.message
            : err instanceof Error
              ? err.message
              : String(err);
        update((x) => ({ ...x, status: 'error', error: message, hint: null }));
      }
    } finally {
      if (abort.current === controller) abort.current = null;
    }
  };

  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    void send();
  };
  const onKeyDown = (e: KeyboardEvent) => {
    // Enter sends; Shift+Enter starts a new line.
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      void send();
    }
  };

  return (
    <Card variant="outlined" data-testid="playground">
      <CardContent>
        <Stack direction="row" spacing={1} useFlexGap sx={{ alignItems: 'center', flexWrap: 'wrap', mb: 2 }}>
          <Typography variant="h6" component="h2" sx={{ mr: 'auto' }}>
            Playground
          </Typography>
          <TextField
            select
            size="small"
            label="Model"
            value={model}
            onChange={(e) => setChosen(e.target.value)}
            disabled={streaming || ids.length === 0}
            slotProps={{ select: { native: true }, htmlInput: { 'data-testid': 'playground-model' } }}
            sx={{ minWidth: 160, maxWidth: '100%' }}
          >
            {ids.length === 0 ? <option value="">no models</option> : null}
            {models.map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
                {m.default ? ' (default)' : ''}
                {m.phase !== 'ready' ? ` — ${m.phase}` : ''}
              </option>
            ))}
          </TextField>
          <TextField
            size="small"
            label="Max tokens"
            value={maxTokensText}
            onChange={(e) => setMaxTokensText(e.target.value)}
            error={tokensLimit === null}
            disabled={streaming}
            slotProps={{ htmlInput: { inputMode: 'numeric', 'data-testid': 'playground-max-tokens', 'aria-invalid': tokensLimit === null } }}
            sx={{ width: 104 }}
          />
          <Button
            variant="text"
            data-testid="playground-clear"
            disabled={streaming || exchanges.length === 0}
            onClick={() => setExchanges([])}
          >
            Clear
          </Button>
        </Stack>

        <Stack spacing={2} data-testid="playground-conversation" aria-live="polite" sx={{ mb: exchanges.length > 0 ? 2 : 0 }}>
          {exchanges.map((x) => (
            <ExchangeView key={x.id} x={x} />
          ))}
        </Stack>

        <Box component="form" onSubmit={onSubmit} sx={{ display: 'flex', gap: 1, alignItems: 'flex-start', flexWrap: { xs: 'wrap', sm: 'nowrap' } }}>
          <TextField
            multiline
            minRows={1}
            maxRows={6}
            fullWidth
            size="small"
            label="Message"
            placeholder="Say something to the model (Enter sends, Shift+Enter: new line)"
            value={prompt}
            onChange={(e) => setPrompt(e.target.value)}
            onKeyDown={onKeyDown}
            slotProps={{ htmlInput: { 'data-testid': 'playground-input' } }}
          />
          {streaming ? (
            <Button variant="outlined" color="error" data-testid="playground-stop" onClick={() => abort.current?.abort()} sx={{ flexShrink: 0 }}>
              Stop
            </Button>
          ) : (
            <Button
              type="submit"
              variant="contained"
              data-testid="playground-send"
              disabled={prompt.trim() === '' || model === '' || tokensLimit === null}
              sx={{ flexShrink: 0 }}
            >
              Send
            </Button>
          )}
        </Box>
      </CardContent>
    </Card>
  );
}
