/**
 * Models from Hugging Face: the pulls' wire contract.
 *
 * REST (admin): `POST /api/models/pull` with {@link PullRequest} answers 202 with a {@link Pull}
 * (the one under way when that file is already being pulled); `GET /api/models/pulls` lists
 * them ({@link PullsResponse}); `DELETE /api/models/pulls/{id}` cancels one and answers it;
 * `DELETE /api/models/{id}` removes a pulled model's file once it is unloaded (409 otherwise).
 * Refusals of a pull: 400 a source that is not one, 404 no such repository or file, 401/403
 * a gated repository, 409 a tag that matches several files (the message lists them), 507 not
 * enough disk space.
 *
 * Socket.IO (server -> client): `modelPull` with one {@link Pull} on every change (progress
 * at most a few times a second per pull).
 */

export type PullState = 'downloading' | 'done' | 'failed' | 'cancelled';

export interface Pull {
  id: string;
  /** What was asked for: `owner/repo:Q4_K_M` or `owner/repo/file.gguf`. */
  source: string;
  repo: string;
  /** The files it downloads (several for a split model). */
  files: string[];
  /** The id the model is served under once it is done. */
  model: string;
  /** A newer server may send a state this build does not know. */
  state: PullState | string;
  /** Bytes downloaded so far, of `total` (0 while the size is unknown). */
  bytes: number;
  total: number;
  /** Why it failed; null otherwise. */
  error: string | null;
  /** When it started, on the server's clock: the page only orders pulls by it. */
  startedAt: number;
}

export interface PullRequest {
  source: string;
}

export interface PullsResponse {
  pulls: Pull[];
}

export const MODEL_PULL_EVENT = 'modelPull';
export const PULL_PATH = '/api/models/pull';
export const PULLS_PATH = '/api/models/pulls';
