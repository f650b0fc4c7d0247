// Models: the bases this server trains and serves, and the project's fine-tuned models.

import { api } from '../api.js';
import { isBase, isCheckpoint, playgroundLink } from '../domain.js';

export function modelsPage() {
  return {
    models: [],
    loaded: false,
    error: '',

    init() {
      this.refresh();
    },

    async refresh() {
      try {
        this.models = (await api('GET', '/models')).data;
        this.error = '';
      } catch (err) {
        this.error = err.message;
      }
      this.loaded = true;
    },

    kind(model) {
      if (isBase(model)) return 'Base';
      return isCheckpoint(model) ? 'Checkpoint' : 'Fine-tuned';
    },

    deletable(model) {
      return !isBase(model);
    },

    tryLink(model) {
      return isBase(model) ? playgroundLink({ a: model.id })
        : playgroundLink({ a: model.root, b: model.id });
    },

    async remove(model) {
      if (!window.confirm(`Delete ${model.id}? Its adapter is removed and it is no longer served.`)) {
        return;
      }
      try {
        await api('DELETE', `/models/${encodeURIComponent(model.id)}`);
        await this.refresh();
      } catch (err) {
        this.error = err.message;
      }
    },
  };
}
