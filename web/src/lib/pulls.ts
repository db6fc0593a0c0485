import type { GatewayModel } from '../types/gateway';
import type { Pull } from '../types/pulls';
import { formatBytes } from '../utils/format';

type Dict = Record<string, unknown>;

const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);
const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0);

/** One pull as the server sends it (REST or `modelPull`); null when it is not one. */
export function parsePull(raw: unknown): Pull | null {
  if (!isDict(raw) || typeof raw.id !== 'string' || raw.id === '') return null;
  const source = typeof raw.source === 'string' ? raw.source : '';
  return {
    id: raw.id,
    source,
    repo: typeof raw.repo === 'string' ? raw.repo : '',
    files: Array.isArray(raw.files) ? raw.files.map(String) : [],
    model: typeof raw.model === 'string' ? raw.model : '',
    state: typeof raw.state === 'string' ? raw.state : 'downloading',
    bytes: count(raw.bytes),
    total: count(raw.total),
    error: typeof raw.error === 'string' && raw.error !== '' ? raw.error : null,
    startedAt: count(raw.startedAt),
  };
}

/** `GET /api/models/pulls`: its pulls, the malformed ones left out; null when it has no list. */
export function parsePulls(body: unknown): Pull[] | null {
  if (!isDict(body) || !Array.isArray(body.pulls)) return null;
  return body.pulls.map(parsePull).filter((p): p is Pull => p !== null);
}

/** A pull only moves forward: downloading, then one of the ends it never leaves. */
const FINISHED: ReadonlySet<string> = new Set(['done', 'failed', 'cancelled']);
export const isFinished = (pull: Pick<Pull, 'state'>): boolean => FINISHED.has(pull.state);

/**
 * Whether `candidate` is at least as far along as `known` (the same pull, heard twice). The
 * answers of REST calls and the socket's events may arrive out of order (a list fetched before
 * an event can land after it): the later word on a pull is the one furthest along.
 */
export function supersedes(candidate: Pull, known: Pull): boolean {
  const ended = isFinished(candidate);
  if (ended !== isFinished(known)) return ended;
  return ended || candidate.bytes >= known.bytes;
}

/** `list` with `pull` taken in (replacing an older word on the same pull). Newest first. */
export function mergePull(list: readonly Pull[], pull: Pull): Pull[] {
  const known = list.find((p) => p.id === pull.id);
  if (known && !supersedes(pull, known)) return list as Pull[];
  const rest = list.filter((p) => p.id !== pull.id);
  return newestFirst([...rest, pull]);
}

/** `list` with every pull of `fetched` taken in; pulls only this page knows stay. */
export function mergePulls(list: readonly Pull[], fetched: readonly Pull[]): Pull[] {
  return fetched.reduce<Pull[]>((acc, pull) => mergePull(acc, pull), [...list]);
}

function newestFirst(list: Pull[]): Pull[] {
  return list.sort((a, b) => b.startedAt - a.startedAt || a.id.localeCompare(b.id));
}

export interface PullProgress {
  /** 0-100, or null while the size is unknown. */
  percent: number | null;
  /** `12.0 MiB of 48.0 MiB (25%)`; the bytes alone while the size is unknown, or once done. */
  text: string;
}

export function pullProgress(pull: Pick<Pull, 'bytes' | 'total' | 'state'>): PullProgress {
  // Done: its size is all there is to say.
  if (pull.state === 'done') return { percent: 100, text: formatBytes(pull.total || pull.bytes) };
  if (pull.total <= 0) return { percent: null, text: formatBytes(pull.bytes) };
  const done = Math.min(pull.bytes, pull.total);
  // Floored: 100% only once every byte is there.
  const percent = Math.floor((done / pull.total) * 100);
  return { percent, text: `${formatBytes(done)} of ${formatBytes(pull.total)} (${percent}%)` };
}

const HUB_URL = /^(?:https?:\/\/)?(?:www\.)?(?:huggingface\.co|hf\.co)\//i;
const REPO = /^[\w.-]+\/[\w.-]+$/;
/** A whole source pasted into the repository field: `owner/repo:TAG` or `owner/repo/file.gguf`. */
const WHOLE_SOURCE = /^[\w.-]+\/[\w.-]+(?::[^\s/:]+|\/\S+)$/;

/** What the form asks for, read into a source for `POST /api/models/pull`, or why it cannot be. */
export type SourceReading = { ok: true; source: string } | { ok: false; problem: string };

/**
 * The source of a pull from the form's two fields: the repository (`owner/repo`, or its
 * address on huggingface.co) and, optionally, a quantisation (`Q4_K_M`, sent as
 * `owner/repo:Q4_K_M`) or a file name (anything ending in `.gguf` or holding a folder, sent as
 * `owner/repo/file.gguf`); a whole source pasted into the first field is sent as it is. The
 * server judges the rest: which files a tag matches, whether the
 * repository exists.
 */
export function readSource(repository: string, choice: string): SourceReading {
  const repo = repository.trim().replace(HUB_URL, '').replace(/\/+$/, '');
  const pick = choice.trim().replace(/^[:/]+/, '');
  if (repo === '') return { ok: false, problem: 'Name a repository, such as owner/model-GGUF.' };
  if (pick === '' && WHOLE_SOURCE.test(repo)) return { ok: true, source: repo };
  if (!REPO.test(repo)) {
    return { ok: false, problem: `“${repo}” is not a repository: write it as owner/name.` };
  }
  if (pick === '') return { ok: true, source: repo };
  const isFile = /\.gguf$/i.test(pick) || pick.includes('/');
  return { ok: true, source: isFile ? `${repo}/${pick}` : `${repo}:${pick}` };
}

/**
 * The models that may be removed: those the models list marks `removable` (files of
 * models_dir), and those a finished pull of this page brought (until the list says so too).
 * llamaherd has the last word: it refuses to delete what is loaded or busy.
 */
export function removableModels(models: readonly Pick<GatewayModel, 'id' | 'removable'>[], pulls: readonly Pull[]): Set<string> {
  const pulledHere = new Set(pulls.filter((p) => p.state === 'done' && p.model !== '').map((p) => p.model));
  return new Set(models.filter((m) => m.removable || pulledHere.has(m.id)).map((m) => m.id));
}
