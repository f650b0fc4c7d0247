// One job: its state, curves, events (followed live), checkpoints, results and evaluation,
// cancel / pause / resume, and sharing its models (the final one, its checkpoints) with
// other projects.

import { api, downloadFile, stream } from '../api.js';
import { TrainingCharts } from '../charts.js';
import {
  POLL_MS, TERMINAL, canCancel, canPause, canResume, methodLong, playgroundLink, sleep,
} from '../domain.js';
import { label, number } from '../format.js';

const RECONNECT_MS = 2000;
const EVALUATING = ['pending', 'running'];

const jobPath = (id) => `/fine_tuning/jobs/${encodeURIComponent(id)}`;
const grantsPath = (model) => `/fine_tuning/checkpoints/${encodeURIComponent(model)}/permissions`;

// Nothing more will change: the job is over and so is its evaluation.
function settled(job) {
  return TERMINAL.includes(job.status) && !EVALUATING.includes(job.evaluation?.status);
}

export function jobPage() {
  // Not reactive state: what the page holds open while it is shown.
  // after: the last event id seen (a stream resumes there); seen: ids, so none shows twice.
  const live = { charts: null, abort: null, timer: null, id: null, after: null, seen: new Set() };

  return {
    job: null,
    events: [],
    checkpoints: [],
    results: [],
    progress: null,
    fullValidLoss: null,
    error: '',
    acting: '',
    actionError: '',
    // Sharing: the model chosen, its grants, the project ids typed in.
    shareModel: '',
    grants: [],
    grantsLoaded: false,
    grantTo: '',
    granting: false,
    shareError: '',

    init() {
      this.$nextTick(() => this.open(this.route.id));
      this.$watch('route.id', (id) => { if (id && id !== live.id) this.open(id); });
    },

    destroy() {
      this.close();
    },

    close() {
      live.abort?.abort();
      clearInterval(live.timer);
      live.charts?.destroy();
      live.charts = null;
    },

    async open(id) {
      this.close();
      Object.assign(live, { id, after: null, seen: new Set() });
      Object.assign(this, {
        job: null, events: [], checkpoints: [], results: [], progress: null,
        fullValidLoss: null, error: '', actionError: '', shareModel: '', grants: [],
        grantsLoaded: false, grantTo: '', shareError: '',
      });
      live.abort = new AbortController();
      live.charts = new TrainingCharts(this.$refs.lossChart, this.$refs.accuracyChart);
      await this.refresh();
      if (this.error) return;
      this.follow(id, live.abort.signal);
      this.poll();
    },

    // The job, its checkpoints and results, until nothing more will change; then the events
    // once more, for those written after the job ended (the evaluation's).
    poll() {
      clearInterval(live.timer);
      live.timer = setInterval(async () => {
        await this.refresh();
        if (this.job && settled(this.job)) {
          clearInterval(live.timer);
          this.follow(live.id, live.abort.signal);
        }
      }, POLL_MS);
    },

    async refresh() {
      const id = live.id;
      try {
        const [job, checkpoints] = await Promise.all([
          api('GET', jobPath(id)), api('GET', `${jobPath(id)}/checkpoints?limit=100`),
        ]);
        if (id !== live.id) return;
        Object.assign(this, { job, checkpoints: checkpoints.data, error: '' });
        this.chooseShareModel();
        await this.loadResults(job.result_files);
      } catch (err) {
        this.error = err.message;
      }
    },

    async loadResults(ids) {
      if (ids.length === this.results.length) return;
      this.results = await Promise.all(ids.map((id) => api('GET', `/files/${encodeURIComponent(id)}`)
        .catch(() => ({ id, filename: id, purpose: 'deleted', bytes: null }))));
    },

    // The events stream from the last event seen on; a dropped connection resumes there,
    // until `done` says the job is over.
    async follow(id, signal) {
      while (!signal.aborted) {
        let finished = false;
        const query = live.after ? `&after=${encodeURIComponent(live.after)}` : '';
        try {
          await stream('GET', `${jobPath(id)}/events?stream=true${query}`, {
            signal,
            onEvent: (frame) => {
              if (frame.event === 'done') {
                this.job = JSON.parse(frame.data);
                finished = true;
                return false;
              }
              this.addEvent(JSON.parse(frame.data));
              return true;
            },
          });
        } catch (err) {
          if (signal.aborted) return;
          if (err.status === 404 || err.status === 401) {
            this.error = err.message;
            return;
          }
        }
        if (finished) {
          this.refresh();
          return;
        }
        await sleep(RECONNECT_MS, signal);
      }
    },

    addEvent(event) {
      if (live.seen.has(event.id)) return;
      live.seen.add(event.id);
      live.after = event.id;
      this.events.unshift(event);
      if (event.type !== 'metrics') return;
      const data = event.data || {};
      live.charts?.add(data);
      if (data.total_steps) this.progress = { step: data.step, total: data.total_steps };
      if (data.full_valid_loss != null) this.fullValidLoss = data.full_valid_loss;
    },

    async act(action) {
      if (action === 'cancel' && !window.confirm(`Cancel ${this.job.id}?`)) return;
      this.acting = action;
      this.actionError = '';
      try {
        this.job = await api('POST', `${jobPath(this.job.id)}/${action}`);
        this.poll();
      } catch (err) {
        this.actionError = err.message;
      } finally {
        this.acting = '';
      }
    },

    canCancel() { return canCancel(this.job); },
    canPause() { return canPause(this.job); },
    canResume() { return canResume(this.job); },

    progressShare() {
      return this.progress ? Math.round((100 * this.progress.step) / this.progress.total) : 0;
    },

    methodName() {
      return methodLong(this.job);
    },

    graderJson() {
      const grader = this.job?.method?.reinforcement?.grader;
      return grader ? JSON.stringify(grader, null, 2) : '';
    },

    hyperparameterRows() {
      const method = this.job?.method || {};
      const hp = method[method.type]?.hyperparameters || this.job?.hyperparameters || {};
      return Object.entries(hp).filter(([, v]) => v != null);
    },

    // Graders as rows; the base, each kept checkpoint and the final model as columns.
    evaluationColumns() {
      const evaluation = this.job?.evaluation;
      if (!evaluation?.base || !evaluation?.fine_tuned) return [];
      return [
        // A job on an ft: model is compared with that model, the one it started from.
        { title: evaluation.base_model?.startsWith('ft:') ? 'Started from' : 'Base',
          scores: evaluation.base },
        ...(evaluation.checkpoints || []).map((c) => ({ title: `Step ${c.step_number}`, scores: c })),
        { title: 'Fine-tuned', scores: evaluation.fine_tuned },
      ];
    },

    evaluationRows() {
      const columns = this.evaluationColumns();
      if (!columns.length) return [];
      const tuned = columns.at(-1).scores;
      return Object.keys(tuned).map((grader) => ({
        grader,
        values: columns.map((c) => c.scores[grader]),
        delta: tuned[grader] - (columns[0].scores[grader] ?? 0),
      }));
    },

    checkpointMetrics(checkpoint) {
      return Object.entries(checkpoint.metrics).filter(([k]) => k !== 'step')
        .map(([k, v]) => `${label(k).toLowerCase()} ${number(v)}`).join(' · ');
    },

    playgroundFor(model) {
      return playgroundLink({ a: this.job?.model, b: model });
    },

    // The models a grant may name: the job's own and each checkpoint it kept.
    shareableModels() {
      const models = this.checkpoints.map((c) => c.fine_tuned_model_checkpoint);
      return this.job?.fine_tuned_model ? [this.job.fine_tuned_model, ...models] : models;
    },

    // Sharing starts with the first model there is (the job's own, else its newest
    // checkpoint) chosen, so the select never shows a model that is not the one chosen.
    chooseShareModel() {
      if (this.shareModel || !this.shareableModels().length) return;
      // After the options are drawn, or the select would not show the choice.
      this.$nextTick(() => {
        if (this.shareModel) return;
        this.shareModel = this.shareableModels()[0] || '';
        this.loadGrants();
      });
    },

    async loadGrants() {
      const model = this.shareModel;
      this.shareError = '';
      if (!model) return;
      try {
        const grants = (await api('GET', `${grantsPath(model)}?limit=100`)).data;
        if (model === this.shareModel) Object.assign(this, { grants, grantsLoaded: true });
      } catch (err) {
        this.shareError = err.message;
      }
    },

    async grant() {
      const projectIds = this.grantTo.split(/[\s,]+/).filter(Boolean);
      if (!this.shareModel || !projectIds.length || this.granting) return;
      this.granting = true;
      this.shareError = '';
      try {
        await api('POST', grantsPath(this.shareModel), { body: { project_ids: projectIds } });
        this.grantTo = '';
        await this.loadGrants();
      } catch (err) {
        this.shareError = err.message;
      } finally {
        this.granting = false;
      }
    },

    async revoke(grant) {
      if (!window.confirm(`Revoke ${grant.project_id}'s access to ${this.shareModel}?`)) return;
      this.shareError = '';
      try {
        await api('DELETE', `${grantsPath(this.shareModel)}/${encodeURIComponent(grant.id)}`);
        await this.loadGrants();
      } catch (err) {
        this.shareError = err.message;
      }
    },

    download(file) {
      downloadFile(file.id, file.filename).catch((err) => { this.actionError = err.message; });
    },
  };
}
