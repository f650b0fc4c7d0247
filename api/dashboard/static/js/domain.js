// What the pages share about tuneserve's objects.

export const POLL_MS = 3000;
export const TERMINAL = ['succeeded', 'failed', 'cancelled'];
const PAUSABLE = ['validating_files', 'queued', 'running'];

// A base model has no parent; a fine-tuned one names the model its training started from.
export const isBase = (model) => !model.parent;
export const isCheckpoint = (model) => model.id.includes(':ckpt-step-');

export const canCancel = (job) => Boolean(job) && !TERMINAL.includes(job.status);
export const canPause = (job) => Boolean(job) && PAUSABLE.includes(job.status);
export const canResume = (job) => Boolean(job) && job.status === 'paused';

// A job's method, shortly (lists) and in full (its page); a job without one is supervised.
const METHODS = {
  supervised: ['SFT', 'Supervised (SFT)'], dpo: ['DPO', 'Preference (DPO)'],
  reinforcement: ['RFT', 'Reinforcement (RFT)'],
};
const methodNames = (job) => METHODS[job?.method?.type] || METHODS.supervised;
export const methodShort = (job) => methodNames(job)[0];
export const methodLong = (job) => methodNames(job)[1];

// The playground with these models in its left (a) and right (b) panes.
export function playgroundLink(panes) {
  const params = new URLSearchParams(Object.entries(panes).filter(([, model]) => model));
  return `#/playground?${params}`;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
