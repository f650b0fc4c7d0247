// Playground: one prompt sent to two models side by side, both answers streamed. Each pane
// keeps its own conversation, so a follow-up goes to each model with its own earlier answers.

import { ApiError, api, stream } from '../api.js';
import { isBase, isCheckpoint } from '../domain.js';

function pane() {
  // state: idle | streaming | done | error; chunks: content deltas received for the last answer.
  return { model: '', messages: [], state: 'idle', error: '', chunks: 0 };
}

function deltaOf(chunk) {
  if (chunk.error) throw new ApiError(0, chunk.error.message || 'The model failed to answer.');
  return chunk.choices?.[0]?.delta?.content || '';
}

export function playground() {
  const aborts = new Set();
  return {
    models: [],
    panes: [pane(), pane()],
    prompt: '',
    system: '',
    maxTokens: 128,
    error: '',

    async init() {
      try {
        this.models = (await api('GET', '/models')).data;
      } catch (err) {
        this.error = err.message;
        return;
      }
      const bases = this.models.filter(isBase);
      const tuned = this.models.filter((m) => !isBase(m) && !isCheckpoint(m));
      const { a, b } = this.route.params;
      // After the options are drawn, or the selects would not show the choice.
      this.$nextTick(() => {
        this.panes[0].model = a || bases[0]?.id || '';
        this.panes[1].model = b || tuned.at(-1)?.id || bases[0]?.id || '';
      });
    },

    destroy() {
      for (const abort of aborts) abort.abort();
    },

    engineNotice() {
      if (!this.engine || this.engine === 'ready') return '';
      return this.engine === 'off' ? 'This server runs no inference engine: chat is not available.'
        : `The inference engine is ${this.engine}; answers wait until it is ready.`;
    },

    busy() {
      return this.panes.some((p) => p.state === 'streaming');
    },

    isBaseId(id) {
      return this.models.some((m) => m.id === id && isBase(m));
    },

    send() {
      const text = this.prompt.trim();
      if (!text || this.busy()) return;
      this.prompt = '';
      for (const p of this.panes) this.ask(p, text);
    },

    keydown(event) {
      // Enter sends, Shift+Enter is a new line, as chat boxes do.
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        this.send();
      }
    },

    request(p) {
      const history = p.messages.slice(0, -1).map(({ role, content }) => ({ role, content }));
      const system = this.system.trim();
      return {
        model: p.model,
        messages: system ? [{ role: 'system', content: system }, ...history] : history,
        max_tokens: Number(this.maxTokens) || undefined,
        stream: true,
      };
    },

    async ask(p, text) {
      p.messages.push({ role: 'user', content: text }, { role: 'assistant', content: '' });
      const reply = p.messages.at(-1);
      Object.assign(p, { state: 'streaming', error: '', chunks: 0 });
      const abort = new AbortController();
      aborts.add(abort);
      try {
        await stream('POST', '/chat/completions', {
          body: this.request(p),
          signal: abort.signal,
          onEvent: ({ data }) => {
            if (data === '[DONE]') return false;
            const delta = deltaOf(JSON.parse(data));
            if (delta) {
              reply.content += delta;
              p.chunks += 1;
            }
            return true;
          },
        });
        p.state = 'done';
      } catch (err) {
        if (abort.signal.aborted) return;
        if (!reply.content) p.messages.pop();
        Object.assign(p, { state: 'error', error: err.message });
      } finally {
        aborts.delete(abort);
      }
    },

    clear() {
      for (const p of this.panes) Object.assign(p, { messages: [], state: 'idle', error: '', chunks: 0 });
    },
  };
}
