// API keys: the project's own keys (those its jobs make for their graders are not shown).
// A new key's secret is shown once, when it is made: the API answers it then only. Revoking
// is refused everywhere at once, the key this tab is signed in with included (then the shell
// signs out).

import { api, session } from '../api.js';

// The redacted form the API shows, `sk-proj-...abcd`: how this tab's own key is recognised.
const redact = (key) => `${key.slice(0, 8)}...${key.slice(-4)}`;

export function keysPage() {
  let keysPath = '';
  return {
    project: null,
    keys: [],
    loaded: false,
    error: '',
    creating: false,
    // The secret just made, until the user has copied it.
    secret: '',

    async init() {
      try {
        this.project = await api('GET', '/me');
        keysPath = `/organization/projects/${encodeURIComponent(this.project.id)}/api_keys`;
        await this.refresh();
      } catch (err) {
        this.error = err.message;
        this.loaded = true;
      }
    },

    async refresh() {
      try {
        this.keys = (await api('GET', `${keysPath}?limit=100`)).data;
        this.error = '';
      } catch (err) {
        this.error = err.message;
      }
      this.loaded = true;
    },

    isSessionKey(key) {
      return redact(session.key() || '') === key.redacted_value;
    },

    async create() {
      if (this.creating || !keysPath) return;
      this.creating = true;
      this.error = '';
      try {
        this.secret = (await api('POST', keysPath)).value;
        await this.refresh();
      } catch (err) {
        this.error = err.message;
      } finally {
        this.creating = false;
      }
    },

    dismissSecret() {
      this.secret = '';
    },

    async revoke(key) {
      const own = this.isSessionKey(key)
        ? ' It is the key this dashboard is signed in with: you will be signed out.' : '';
      if (!window.confirm(`Revoke ${key.redacted_value}? Every request with it is refused from now on.${own}`)) {
        return;
      }
      this.error = '';
      try {
        await api('DELETE', `${keysPath}/${encodeURIComponent(key.id)}`);
        await this.refresh();
      } catch (err) {
        this.error = err.message;
      }
    },
  };
}
