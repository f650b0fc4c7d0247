// The grader of a reinforcement job, edited as JSON inside the job form (its text is the
// form's `grader`), started from a template and tried on a sample answer and dataset item
// with /v1/fine_tuning/alpha/graders/run before anything trains.

import { api } from '../api.js';
import { label } from '../format.js';

const ANSWER = '{{sample.output_text}}';
const REFERENCE = '{{item.answer}}';

const STRING_CHECK = {
  type: 'string_check', name: 'matches_answer', operation: 'ilike',
  input: ANSWER, reference: REFERENCE,
};
const TEXT_SIMILARITY = {
  type: 'text_similarity', name: 'close_to_answer', evaluation_metric: 'fuzzy_match',
  input: ANSWER, reference: REFERENCE,
};

// Each template's grader; a judge needs a model, the first base model served here.
const TEMPLATES = {
  string_check: () => STRING_CHECK,
  text_similarity: () => TEXT_SIMILARITY,
  score_model: (model) => ({
    type: 'score_model', name: 'judge', model,
    input: [
      { role: 'system', content: 'You grade answers. Reply with one number from 0 to 1: '
        + '1 if the answer means the same as the reference, 0 if it does not.' },
      { role: 'user', content: `Reference: ${REFERENCE}\nAnswer: ${ANSWER}` },
    ],
    range: [0, 1],
    sampling_params: { max_completions_tokens: 4, temperature: 0 },
  }),
  multi: () => ({
    type: 'multi', name: 'exact_or_close',
    graders: { exact: STRING_CHECK, close: TEXT_SIMILARITY },
    calculate_output: '0.5 * exact + 0.5 * close',
  }),
};

export function graderText(template = 'string_check', model = '') {
  return JSON.stringify(TEMPLATES[template](model), null, 2);
}

// The JSON a text holds; a text that is not JSON is said in words naming the field.
export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`The ${what} is not valid JSON: ${err.message}`);
  }
}

export function graderEditor() {
  return {
    template: 'string_check',
    sample: 'Yes',
    itemText: '{"answer": "yes"}',
    previewing: false,
    graderResult: null,
    graderError: '',

    useTemplate() {
      this.form.grader = graderText(this.template, this.baseModels[0]?.id || '');
      this.graderResult = null;
      this.graderError = '';
    },

    async preview() {
      if (this.previewing) return;
      this.previewing = true;
      this.graderError = '';
      try {
        const body = { grader: parseJson(this.form.grader, 'grader'), model_sample: this.sample };
        if (this.itemText.trim()) body.item = parseJson(this.itemText, 'item');
        this.graderResult = await api('POST', '/fine_tuning/alpha/graders/run', { body });
      } catch (err) {
        this.graderResult = null;
        this.graderError = err.message;
      } finally {
        this.previewing = false;
      }
    },

    // What went wrong while the grader ran (the run still scores, 0): OpenAI's flags, named.
    graderFlags() {
      const errors = this.graderResult?.metadata?.errors || {};
      return Object.entries(errors).filter(([, raised]) => raised === true).map(([flag]) => {
        const details = errors[`${flag}_details`];
        return label(flag).toLowerCase() + (details ? `: ${details}` : '');
      });
    },

    subRewards() {
      return Object.entries(this.graderResult?.sub_rewards || {});
    },
  };
}
