#!/usr/bin/env node
// Checks llamaherd's `llamaStatus` Socket.IO contract with the official JavaScript client
// (socket.io-client 4.x), the way a browser dashboard or a Node tool would use it.
//
//   node tests/node/socketio_contract.mjs http://127.0.0.1:3000
//
// Two connections, one after the other:
//   default    socket.io-client's default transports: HTTP long-polling, then the upgrade to a
//              WebSocket (the upgrade must happen);
//   websocket  transports: ['websocket'] only.
// On each: the first `llamaStatus` (sent on connect) must match the contract exactly, then
// `requestLlamaStatus` is emitted and an answer (again checked) must arrive.
//
// Success: one JSON line on stdout, exit 0. Any violation: the reason on stderr, exit 1.
// Everything must be done within 15 seconds, or exit 1.

import { io } from 'socket.io-client';

const OVERALL_TIMEOUT_MS = 15_000;
const STATUSES = ['initial', 'checking', 'starting', 'ready', 'crashed', 'stopping', 'error'];
const EVENT_KEYS = ['data', 'timestamp', 'type'];
const DATA_KEYS = ['lastError', 'models', 'retries', 'startedAt', 'status', 'uptime'];
const MODEL_KEYS = ['id', 'modified_at', 'name', 'size', 'type'];

class ContractError extends Error {}

let step = 'starting'; // what is being waited for, for the timeout's message

function fail(message) {
  throw new ContractError(message);
}

function describe(value) {
  return JSON.stringify(value) ?? String(value);
}

function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function sameKeys(object, expected) {
  const keys = Object.keys(object).sort();
  return keys.length === expected.length && keys.every((key, i) => key === expected[i]);
}

function checkInt(value, where) {
  if (!Number.isInteger(value)) fail(`${where} must be an integer, got ${describe(value)}`);
}

function checkString(value, where) {
  if (typeof value !== 'string') fail(`${where} must be a string, got ${describe(value)}`);
}

function checkStringOrNull(value, where) {
  if (value !== null && typeof value !== 'string') {
    fail(`${where} must be a string or null, got ${describe(value)}`);
  }
}

/** Throws ContractError unless `event` is a valid `llamaStatus` payload. */
function checkStatusEvent(event, where) {
  if (!isPlainObject(event)) fail(`${where}: the payload must be an object, got ${describe(event)}`);
  if (!sameKeys(event, EVENT_KEYS)) {
    fail(`${where}: keys must be exactly ${EVENT_KEYS}, got ${Object.keys(event).sort()}`);
  }
  if (event.type !== 'llama_status') {
    fail(`${where}: type must be "llama_status", got ${describe(event.type)}`);
  }
  checkInt(event.timestamp, `${where}: timestamp`);
  if (event.timestamp < 1_600_000_000_000) {
    fail(`${where}: timestamp must be milliseconds since the epoch, got ${event.timestamp}`);
  }

  const data = event.data;
  if (!isPlainObject(data)) fail(`${where}: data must be an object, got ${describe(data)}`);
  // The contract's fields must all be there; fields added beside them are allowed.
  const missing = DATA_KEYS.filter((key) => !(key in data));
  if (missing.length > 0) fail(`${where}: data lacks ${missing.join(', ')}`);
  if (!STATUSES.includes(data.status)) {
    fail(`${where}: data.status must be one of ${STATUSES.join('|')}, got ${describe(data.status)}`);
  }
  checkStringOrNull(data.lastError, `${where}: data.lastError`);
  checkInt(data.retries, `${where}: data.retries`);
  checkInt(data.uptime, `${where}: data.uptime`);
  checkStringOrNull(data.startedAt, `${where}: data.startedAt`);
  if (typeof data.startedAt === 'string' && Number.isNaN(Date.parse(data.startedAt))) {
    fail(`${where}: data.startedAt must be an ISO 8601 time, got ${describe(data.startedAt)}`);
  }

  if (!Array.isArray(data.models)) {
    fail(`${where}: data.models must be an array, got ${describe(data.models)}`);
  }
  data.models.forEach((model, i) => {
    const at = `${where}: data.models[${i}]`;
    if (!isPlainObject(model)) fail(`${at} must be an object, got ${describe(model)}`);
    if (!sameKeys(model, MODEL_KEYS)) {
      fail(`${at}: keys must be exactly ${MODEL_KEYS}, got ${Object.keys(model).sort()}`);
    }
    checkString(model.id, `${at}.id`);
    checkString(model.name, `${at}.name`);
    checkString(model.type, `${at}.type`);
    checkInt(model.size, `${at}.size`);
    checkInt(model.modified_at, `${at}.modified_at`);
  });
}

/** Resolves with the next `llamaStatus` payload on `socket` (queued ones first). */
function statusReader(socket, name) {
  const queue = [];
  const waiting = [];
  let broken = null;
  socket.on('llamaStatus', (...args) => {
    if (args.length !== 1) {
      broken = new ContractError(`${name}: llamaStatus must carry one argument, got ${args.length}`);
    }
    const next = waiting.shift();
    if (next) next.resolve(args[0]);
    else queue.push(args[0]);
  });
  const breakAll = (error) => {
    broken = error;
    for (const next of waiting.splice(0)) next.reject(error);
  };
  socket.on('connect_error', (error) => {
    breakAll(new ContractError(`${name}: cannot connect: ${error.message}`));
  });
  socket.on('disconnect', (reason) => {
    breakAll(new ContractError(`${name}: disconnected early: ${reason}`));
  });
  return () => {
    if (broken) return Promise.reject(broken);
    if (queue.length > 0) return Promise.resolve(queue.shift());
    return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  };
}

function waitForUpgrade(socket, name) {
  const engine = socket.io.engine;
  if (engine.transport.name === 'websocket') return Promise.resolve();
  return new Promise((resolve, reject) => {
    engine.once('upgrade', () => resolve());
    engine.once('upgradeError', (error) => {
      reject(new ContractError(`${name}: the upgrade to a WebSocket failed: ${error.message}`));
    });
  });
}

async function check(url, name, options) {
  const socket = io(url, {
    ...options,
    forceNew: true,
    reconnection: false,
    timeout: 10_000,
  });
  try {
    const nextStatus = statusReader(socket, name);
    step = `${name}: waiting for the first llamaStatus on connect`;
    const first = await nextStatus();
    checkStatusEvent(first, `${name}: first llamaStatus on connect`);
    socket.emit('requestLlamaStatus');
    step = `${name}: waiting for the answer to requestLlamaStatus`;
    const answer = await nextStatus();
    checkStatusEvent(answer, `${name}: llamaStatus after requestLlamaStatus`);
    step = `${name}: waiting for the upgrade from polling to a WebSocket`;
    if (options.transports === undefined) await waitForUpgrade(socket, name);
    return {
      name,
      transport: socket.io.engine.transport.name,
      status: first.data.status,
      models: first.data.models.length,
      answered: true,
    };
  } finally {
    socket.disconnect();
  }
}

async function main(argv) {
  const url = argv[2];
  if (!url || argv.length > 3) fail('usage: node socketio_contract.mjs URL');
  const connections = [
    await check(url, 'default', {}),
    await check(url, 'websocket', { transports: ['websocket'] }),
  ];
  return { ok: true, url, status: connections[0].status, connections };
}

const timer = setTimeout(() => {
  process.stderr.write(`contract check timed out after ${OVERALL_TIMEOUT_MS / 1000} s (${step})\n`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

main(process.argv).then(
  (summary) => {
    clearTimeout(timer);
    process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(0));
  },
  (error) => {
    clearTimeout(timer);
    const reason = error instanceof ContractError ? error.message : error.stack ?? String(error);
    process.stderr.write(`contract violation: ${reason}\n`, () => process.exit(1));
  },
);
