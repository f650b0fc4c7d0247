// Webhooks: the project's endpoints; create one, send it a test event, rotate its secret,
// delete it. A signing secret is shown once, when it is made: the API answers it then only.
// The test attempts sent from this page are listed by endpoint (the API keeps no readable log
// of its deliveries, so a reload starts the list afresh).

import { api } from '../api.js';

const endpointPath = (id) => `/webhook_endpoints/${encodeURIComponent(id)}`;

function blankForm(eventTypes) {
  return { name: '', url: '', event_types: [...eventTypes] };
}

export function webhooksPage() {
  let attemptCount = 0;
  // The event types' request, which a new endpoint's form waits for: all are checked there.
  let eventTypesLoaded = null;
  return {
    endpoints: [],
    eventTypes: [],
    loaded: false,
    error: '',
    showForm: false,
    form: blankForm([]),
    formError: '',
    creating: false,
    // {name, value}: the secret just made, until the user has copied it.
    secret: null,
    selectedId: '',
    testEvent: '',
    testing: false,
    keepOldSecret: false,
    rotating: false,
    actionError: '',
    // Endpoint id -> its test attempts, newest first.
    attempts: {},

    init() {
      eventTypesLoaded = this.loadEventTypes();
      this.refresh();
    },

    async loadEventTypes() {
      try {
        this.eventTypes = (await api('GET', '/webhook_event_types')).data;
        this.testEvent = this.eventTypes[0] || '';
      } catch (err) {
        this.error = err.message;
      }
    },

    async refresh() {
      try {
        this.endpoints = (await api('GET', '/webhook_endpoints?limit=100')).data;
        this.error = '';
      } catch (err) {
        this.error = err.message;
      }
      this.loaded = true;
    },

    async openForm() {
      await eventTypesLoaded;
      this.form = blankForm(this.eventTypes);
      this.formError = '';
      this.showForm = true;
    },

    closeForm() {
      this.showForm = false;
    },

    async create() {
      if (this.creating) return;
      this.creating = true;
      this.formError = '';
      try {
        const made = await api('POST', '/webhook_endpoints', {
          body: { name: this.form.name.trim(), url: this.form.url.trim(),
            event_types: this.form.event_types },
        });
        this.showSecret(made);
        this.closeForm();
        await this.refresh();
        this.select(made);
      } catch (err) {
        this.formError = err.message;
      } finally {
        this.creating = false;
      }
    },

    showSecret(endpoint) {
      this.secret = { name: endpoint.name, value: endpoint.signing_secret };
    },

    dismissSecret() {
      this.secret = null;
    },

    select(endpoint) {
      this.selectedId = endpoint.id;
      this.actionError = '';
    },

    selected() {
      return this.endpoints.find((e) => e.id === this.selectedId) || null;
    },

    attemptsOf(endpoint) {
      return this.attempts[endpoint.id] || [];
    },

    // One test event, sent once: the receiver's status, or the API's reason it was not
    // delivered, kept as an attempt.
    async sendTest() {
      const endpoint = this.selected();
      if (!endpoint || this.testing) return;
      this.testing = true;
      const started = Date.now();
      attemptCount += 1;
      const attempt = {
        n: attemptCount, at: started / 1000, eventType: this.testEvent, delivered: false,
        outcome: '', seconds: 0,
      };
      try {
        const result = await api('POST', `${endpointPath(endpoint.id)}/test`,
          { body: { event_type: this.testEvent } });
        attempt.delivered = true;
        attempt.outcome = `Delivered: the endpoint answered ${result.status_code}.`;
      } catch (err) {
        attempt.outcome = err.message;
      } finally {
        attempt.seconds = (Date.now() - started) / 1000;
        this.attempts[endpoint.id] = [attempt, ...this.attemptsOf(endpoint)];
        this.testing = false;
      }
    },

    async rotate() {
      const endpoint = this.selected();
      if (!endpoint || this.rotating) return;
      const old = this.keepOldSecret ? 'The old secret keeps signing for 24 hours.'
        : 'The old secret stops signing at once.';
      if (!window.confirm(`Make a new signing secret for ${endpoint.name}? ${old}`)) return;
      this.rotating = true;
      this.actionError = '';
      try {
        const rotated = await api('POST', `${endpointPath(endpoint.id)}/rotate_secret`,
          { body: { keep_old_secret_active_for_24_hours: this.keepOldSecret } });
        this.showSecret(rotated);
        await this.refresh();
      } catch (err) {
        this.actionError = err.message;
      } finally {
        this.rotating = false;
      }
    },

    async remove() {
      const endpoint = this.selected();
      if (!endpoint || !window.confirm(`Delete the endpoint ${endpoint.name} (${endpoint.url})?`)) {
        return;
      }
      this.actionError = '';
      try {
        await api('DELETE', endpointPath(endpoint.id));
        delete this.attempts[endpoint.id];
        this.selectedId = '';
        await this.refresh();
      } catch (err) {
        this.actionError = err.message;
      }
    },
  };
}
