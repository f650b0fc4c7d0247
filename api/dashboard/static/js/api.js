// Talking to tuneserve's /v1 API with the signed-in key: JSON calls, uploads with progress,
// downloads, and server-sent-event streams (read with fetch, since EventSource cannot send
// an Authorization header).

const KEY_ITEM = 'tuneserve.apiKey';
const API = '/v1';
// The Tinker API's routes (the same project key, sent as Tinker's SDK sends it).
const TINKER_API = '/api/v1';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The tab's session only: the key is gone when the tab closes and never shared with others.
export const session = {
  key: () => sessionStorage.getItem(KEY_ITEM),
  save: (key) => sessionStorage.setItem(KEY_ITEM, key),
  clear: () => sessionStorage.removeItem(KEY_ITEM),
};

function authHeaders(key = session.key()) {
  return { Authorization: `Bearer ${key}` };
}

// An OpenAI-shaped error body's message, or a readable stand-in when the body is not one
// (a proxy's HTML page, a dropped connection).
function errorOf(status, text) {
  try {
    const error = JSON.parse(text).error;
    if (error && error.message) return new ApiError(status, error.message);
  } catch { /* not JSON */ }
  return new ApiError(status, `The server answered ${status}${text ? `: ${text.slice(0, 200)}` : ''}`);
}

// A 401 mid-session means the key was revoked: the shell signs out and says why.
function reportAuthLoss(error) {
  if (error.status === 401) window.dispatchEvent(new CustomEvent('auth-lost', { detail: error.message }));
}

async function send(method, path, { body, key, signal, headers = {}, root = API } = {}) {
  const init = { method, signal, headers: { ...authHeaders(key), ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(root + path, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'The server cannot be reached.');
  }
  if (!response.ok) {
    const error = errorOf(response.status, await response.text());
    if (key === undefined) reportAuthLoss(error);
    throw error;
  }
  return response;
}

export async function api(method, path, options = {}) {
  return (await send(method, path, options)).json();
}

// Reads `text/event-stream` frames off a response and hands each to onEvent as
// {id, event, data} until it returns false; comment lines (`: ping`) are skipped.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const frames = buffer.split(/\r?\n\r?\n/);
      buffer = frames.pop();
      for (const frame of frames) {
        const parsed = parseFrame(frame);
        if (parsed && onEvent(parsed) === false) return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseFrame(frame) {
  const out = { id: null, event: 'message', data: [] };
  for (const line of frame.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') out.data.push(value);
    else if (field === 'id') out.id = value;
    else if (field === 'event') out.event = value;
  }
  return out.data.length ? { ...out, data: out.data.join('\n') } : null;
}

// POSTs `body` and streams the answer's SSE frames; the request's own failure throws.
export async function stream(method, path, { body, signal, onEvent }) {
  const response = await send(method, path, { body, signal, headers: { Accept: 'text/event-stream' } });
  await readEvents(response, onEvent);
}

// XMLHttpRequest, not fetch: only it reports upload progress.
export function uploadFile(file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${API}/files`);
    xhr.setRequestHeader('Authorization', authHeaders().Authorization);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(JSON.parse(xhr.responseText));
        return;
      }
      const error = errorOf(xhr.status, xhr.responseText);
      reportAuthLoss(error);
      reject(error);
    };
    xhr.onerror = () => reject(new ApiError(0, 'The upload failed: the server cannot be reached.'));
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

// A file's content saved under its own name (a link with the key cannot be given to the
// browser, so the bytes come through fetch).
export async function downloadFile(id, filename) {
  const blob = await (await send('GET', `/files/${encodeURIComponent(id)}/content`)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename || id;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// A Tinker API call (`/api/v1`, the key as `X-API-Key`): the project's training runs.
export async function tinker(method, path) {
  const key = session.key();
  const response = await send(method, path, { root: TINKER_API, headers: { 'X-API-Key': key } });
  return response.json();
}
