// Jobs: the list (polled while shown) and the form that creates an SFT, DPO or
// reinforcement job (its grader edited and tried in the form: grader-editor.js).

import { api, tinker } from '../api.js';
import { POLL_MS, isBase, methodShort } from '../domain.js';
import { graderText, parseJson } from './grader-editor.js';

const LIST_LIMIT = 50;
// Form field -> how its text becomes the API's value; an empty field is left out ("auto").
const HYPERPARAMETERS = {
  n_epochs: parseInt,
  batch_size: parseInt,
  learning_rate_multiplier: parseFloat,
  beta: parseFloat,
  num_generations: parseInt,
  max_completion_tokens: parseInt,
};
// The hyperparameters one method only has.
const METHOD_OF = { beta: 'dpo', num_generations: 'reinforcement',
  max_completion_tokens: 'reinforcement' };

function blankForm() {
  return {
    method: 'supervised', model: '', training_file: '', validation_file: '', suffix: '',
    n_epochs: '', batch_size: '', learning_rate_multiplier: '', beta: '', num_generations: '',
    max_completion_tokens: '', grader: graderText(),
  };
}

function hyperparameters(form) {
  const out = {};
  for (const [name, parse] of Object.entries(HYPERPARAMETERS)) {
    if (METHOD_OF[name] && METHOD_OF[name] !== form.method) continue;
    const text = String(form[name]).trim();
    if (!text) continue;
    const value = parse(text);
    if (Number.isNaN(value)) throw new Error(`${name} must be a number (or empty for auto).`);
    out[name] = value;
  }
  return out;
}

function jobRequest(form) {
  const settings = { hyperparameters: hyperparameters(form) };
  if (form.method === 'reinforcement') settings.grader = parseJson(form.grader, 'grader');
  const body = {
    model: form.model,
    training_file: form.training_file,
    method: { type: form.method, [form.method]: settings },
  };
  if (form.validation_file) body.validation_file = form.validation_file;
  if (form.suffix.trim()) body.suffix = form.suffix.trim();
  return body;
}

export function jobsPage() {
  let timer = null;
  return {
    jobs: [],
    // Training runs driven through the Tinker API (their loops run on the user's machine).
    runs: [],
    loaded: false,
    error: '',
    showForm: false,
    baseModels: [],
    tunedModels: [],
    files: [],
    form: blankForm(),
    formError: '',
    creating: false,

    init() {
      this.refresh();
      timer = setInterval(() => this.refresh(), POLL_MS);
    },

    destroy() {
      clearInterval(timer);
    },

    async refresh() {
      try {
        const [jobs, runs] = await Promise.all([
          api('GET', `/fine_tuning/jobs?limit=${LIST_LIMIT}`),
          tinker('GET', `/training_runs?limit=${LIST_LIMIT}`),
        ]);
        this.jobs = jobs.data;
        // What the table shows (Alpine's CSP build evaluates plain property reads only).
        this.runs = runs.training_runs.map((run) => ({
          id: run.training_run_id,
          base: run.base_model,
          rank: run.lora_rank,
          lastRequest: Date.parse(run.last_request_time) / 1000,
          sampler: run.last_sampler_checkpoint ? run.last_sampler_checkpoint.tinker_path : '–',
        }));
        this.error = '';
      } catch (err) {
        this.error = err.message;
      }
      this.loaded = true;
    },

    async openForm() {
      this.showForm = true;
      this.formError = '';
      try {
        const [models, files] = await Promise.all([
          api('GET', '/models'), api('GET', '/files?purpose=fine-tune'),
        ]);
        this.baseModels = models.data.filter(isBase);
        this.tunedModels = models.data.filter((m) => !isBase(m));
        this.files = files.data;
        // After the options are drawn, or the selects would not show the defaults.
        this.$nextTick(() => {
          this.form.model ||= this.baseModels[0]?.id || '';
          this.form.training_file ||= this.files[0]?.id || '';
        });
      } catch (err) {
        this.formError = err.message;
      }
    },

    closeForm() {
      this.showForm = false;
      this.form = blankForm();
    },

    fileLabel(file) {
      return `${file.filename} (${file.id})`;
    },

    async create() {
      if (this.creating) return;
      this.formError = '';
      this.creating = true;
      try {
        const job = await api('POST', '/fine_tuning/jobs', { body: jobRequest(this.form) });
        this.closeForm();
        location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      } catch (err) {
        this.formError = err.message;
      } finally {
        this.creating = false;
      }
    },

    open(job) {
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    },

    methodOf(job) {
      return methodShort(job);
    },
  };
}
