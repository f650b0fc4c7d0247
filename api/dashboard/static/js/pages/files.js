// Files: upload (with progress), list, download, delete.

import { api, downloadFile, uploadFile } from '../api.js';
import { bytes } from '../format.js';

export function filesPage() {
  return {
    files: [],
    loaded: false,
    error: '',
    chosen: '',
    progress: 0,
    uploading: false,
    uploadError: '',
    uploaded: '',

    init() {
      this.refresh();
    },

    async refresh() {
      try {
        this.files = (await api('GET', '/files')).data;
        this.error = '';
      } catch (err) {
        this.error = err.message;
      }
      this.loaded = true;
    },

    chose(event) {
      const file = event.target.files[0];
      this.chosen = file ? `${file.name} · ${bytes(file.size)}` : '';
      this.uploadError = '';
      this.uploaded = '';
      this.progress = 0;
    },

    async upload() {
      const file = this.$refs.fileInput.files[0];
      if (!file || this.uploading) return;
      this.uploading = true;
      this.uploadError = '';
      this.progress = 0;
      try {
        const created = await uploadFile(file, 'fine-tune', (share) => {
          this.progress = Math.round(share * 100);
        });
        this.uploaded = `${created.filename} uploaded as ${created.id}`;
        this.$refs.fileInput.value = '';
        this.chosen = '';
        await this.refresh();
      } catch (err) {
        this.uploadError = err.message;
      } finally {
        this.uploading = false;
      }
    },

    async remove(file) {
      if (!window.confirm(`Delete ${file.filename} (${file.id})?`)) return;
      try {
        await api('DELETE', `/files/${encodeURIComponent(file.id)}`);
        await this.refresh();
      } catch (err) {
        this.error = err.message;
      }
    },

    async download(file) {
      try {
        await downloadFile(file.id, file.filename);
      } catch (err) {
        this.error = err.message;
      }
    },
  };
}
