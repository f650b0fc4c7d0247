// Webhooks: the project's endpoints; create one, send it a test event, rotate its secret,
// delete it. A signing secret is shown once, when it is made: the API answers it then only.
// The selected endpoint's deliveries (the events sent to it and every attempt) come from the
// API and are read again every few seconds; the test events sent from this page are listed
// apart (a test is not a delivery: it is sent once, and not recorded).

import { api } from '../api.js';

const endpointPath = (id) => `/webhook_endpoints/${encodeURIComponent(id)}`;
const DELIVERIES_MS = 3_000;
const DELIVERY_TONES = { delivered: 'ok', pending: 'wait', failed: 'bad' };

function blankForm(eventTypes) {
  return { name: '', url: '', event_types: [...eventTypes] };
}

export function webhooksPage() {
  let attemptCount = 0;
  let deliveriesTimer = null;
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
    // The selected endpoint's deliveries, newest first (its latest 20).
    deliveries: [],
    deliveriesFor: '',
    deliveriesError: '',

    init() {
      eventTypesLoaded = this.loadEventTypes();
      this.refresh();
      deliveriesTimer = setInterval(() => this.loadDeliveries(), DELIVERIES_MS);
    },

    destroy() {
      clearInterval(deliveriesTimer);
    },

    async loadDeliveries() {
      const id = this.selectedId;
      if (!id) return;
      try {
        const page = await api('GET', `${endpointPath(id)}/deliveries?limit=20`);
        if (id !== this.selectedId) return; // another endpoint was selected meanwhile
        this.deliveries = page.data;
        this.deliveriesFor = id;
        this.deliveriesError = '';
      } catch (err) {
        if (id === this.selectedId) this.deliveriesError = err.message;
      }
    },

    deliveriesOf(endpoint) {
      return this.deliveriesFor === endpoint.id ? this.deliveries : [];
    },

    deliveryTone: (delivery) => DELIVERY_TONES[delivery.status] || 'muted',

    // The latest attempt's outcome in words: the receiver's status, or the API's reason.
    lastOutcome(delivery) {
      const last = delivery.attempts[delivery.attempts.length - 1];
      if (!last) return delivery.attempt_count ? 'Being sent…' : 'Not sent yet.';
      return last.delivered ? `Delivered: the endpoint answered ${last.status_code}.` : last.error;
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
      if (this.selectedId !== endpoint.id) {
        this.deliveries = [];
        this.deliveriesFor = '';
      }
      this.selectedId = endpoint.id;
      this.actionError = '';
      this.loadDeliveries();
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
