// The dashboard's shell: sign-in, hash routes, the engine's health. Each page is its own
// Alpine component, created when its route is shown and destroyed (timers, streams with it)
// when it is left.

import Alpine from '../vendor/alpinejs-csp/module.esm.min.js';
import { ApiError, api, session } from './api.js';
import * as format from './format.js';
import { filesPage } from './pages/files.js';
import { graderEditor } from './pages/grader-editor.js';
import { jobPage } from './pages/job.js';
import { jobsPage } from './pages/jobs.js';
import { keysPage } from './pages/keys.js';
import { modelsPage } from './pages/models.js';
import { playground } from './pages/playground.js';
import { webhooksPage } from './pages/webhooks.js';

const PAGES = ['files', 'jobs', 'job', 'models', 'playground', 'webhooks', 'keys'];
const HEALTH_MS = 10_000;

// `#/jobs/ftjob-1` -> {page: 'job', id: 'ftjob-1'}; `#/playground?a=X` -> params {a: 'X'}.
function parseRoute() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [first, ...rest] = path.split('/').map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query));
  if (first === 'jobs' && rest.length) return { page: 'job', id: rest.join('/'), params };
  return { page: PAGES.includes(first) ? first : 'jobs', id: null, params };
}

const STATUS_TONES = {
  succeeded: 'ok', running: 'busy', validating_files: 'busy', queued: 'wait', pausing: 'wait',
  paused: 'wait', failed: 'bad', cancelled: 'muted',
};

function shell() {
  let healthTimer = null;
  return {
    signedIn: Boolean(session.key()),
    keyInput: '',
    signInError: '',
    signingIn: false,
    route: parseRoute(),
    engine: '',

    init() {
      window.addEventListener('hashchange', () => { this.route = parseRoute(); });
      window.addEventListener('auth-lost', (e) => this.signOut(e.detail));
      if (this.signedIn) this.watchHealth();
    },

    async signIn() {
      const key = this.keyInput.trim();
      if (!key || this.signingIn) return;
      this.signingIn = true;
      this.signInError = '';
      try {
        await api('GET', '/models', { key });
        session.save(key);
        this.keyInput = '';
        this.signedIn = true;
        this.watchHealth();
      } catch (err) {
        this.signInError = err instanceof ApiError ? err.message : String(err);
      } finally {
        this.signingIn = false;
      }
    },

    signOut(reason = '') {
      session.clear();
      this.signedIn = false;
      this.signInError = reason;
      clearInterval(healthTimer);
    },

    watchHealth() {
      const check = async () => {
        try {
          this.engine = (await (await fetch('/health')).json()).engine || '';
        } catch {
          this.engine = 'unreachable';
        }
      };
      check();
      clearInterval(healthTimer);
      healthTimer = setInterval(check, HEALTH_MS);
    },

    keyHint() {
      if (!this.signedIn) return '';
      const key = session.key() || '';
      return key.length > 10 ? `${key.slice(0, 7)}…${key.slice(-4)}` : 'key';
    },

    on(...pages) {
      return this.signedIn && pages.includes(this.route.page);
    },

    // Shared by every page's template.
    statusTone: (status) => STATUS_TONES[status] || 'muted',
    statusLabel: (status) => (status || '').replaceAll('_', ' '),
    fmtTime: format.time,
    fmtClock: format.clock,
    fmtBytes: format.bytes,
    fmtNumber: format.number,
    fmtLabel: format.label,
  };
}

Alpine.data('shell', shell);
Alpine.data('filesPage', filesPage);
Alpine.data('jobsPage', jobsPage);
Alpine.data('graderEditor', graderEditor);
Alpine.data('jobPage', jobPage);
Alpine.data('keysPage', keysPage);
Alpine.data('modelsPage', modelsPage);
Alpine.data('playground', playground);
Alpine.data('webhooksPage', webhooksPage);
Alpine.start();
