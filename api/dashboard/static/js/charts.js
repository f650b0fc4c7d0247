// A job's training curves: loss (train, valid) and token accuracy (train, valid) by step,
// fed one `metrics` event at a time and redrawn at most once a frame.

import uPlot from '../vendor/uplot/uPlot.esm.js';

const COLORS = { train: '#4f46e5', valid: '#f59e0b' };
const HEIGHT = 220;

function options(title, unit, width) {
  const line = (label, color) => ({
    label, stroke: color, width: 2, spanGaps: true,
    points: { show: true, size: 5, fill: color },
    value: (_, v) => (v == null ? '–' : v.toFixed(4)),
  });
  return {
    title, width, height: HEIGHT,
    scales: { x: { time: false } },
    axes: [
      { label: 'step', stroke: '#6b7280', grid: { stroke: '#eef0f4' } },
      { label: unit, stroke: '#6b7280', grid: { stroke: '#eef0f4' }, size: 60 },
    ],
    series: [{ label: 'step' }, line('train', COLORS.train), line('valid', COLORS.valid)],
    cursor: { drag: { x: true, y: false } },
  };
}

function widthOf(el) {
  return Math.max(280, el.clientWidth);
}

export class TrainingCharts {
  // lossEl carries `data-points`: how many training-loss points are drawn (the test reads it).
  constructor(lossEl, accuracyEl) {
    this.lossEl = lossEl;
    this.steps = new Map();
    this.pending = false;
    this.loss = new uPlot(options('Loss', 'loss', widthOf(lossEl)), [[], [], []], lossEl);
    this.accuracy = new uPlot(options('Token accuracy', 'accuracy', widthOf(accuracyEl)),
      [[], [], []], accuracyEl);
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(lossEl);
    lossEl.dataset.points = '0';
  }

  // One event's `data`; a step seen again (a resumed run) keeps its latest values.
  add(data) {
    if (data.step == null || (data.train_loss == null && data.valid_loss == null)) return;
    this.steps.set(data.step, { ...this.steps.get(data.step), ...data });
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.draw());
    }
  }

  draw() {
    this.pending = false;
    const rows = [...this.steps.values()].sort((a, b) => a.step - b.step);
    const column = (key) => rows.map((r) => r[key] ?? null);
    const steps = column('step');
    this.loss.setData([steps, column('train_loss'), column('valid_loss')]);
    this.accuracy.setData([steps, column('train_mean_token_accuracy'),
      column('valid_mean_token_accuracy')]);
    this.lossEl.dataset.points = String(rows.filter((r) => r.train_loss != null).length);
  }

  resize() {
    for (const chart of [this.loss, this.accuracy]) {
      chart.setSize({ width: widthOf(chart.root.parentElement), height: HEIGHT });
    }
  }

  destroy() {
    this.resizer.disconnect();
    this.loss.destroy();
    this.accuracy.destroy();
  }
}
