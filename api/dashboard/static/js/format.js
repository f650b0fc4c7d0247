// How values read on screen.

export function time(seconds) {
  if (!seconds) return '–';
  return new Date(seconds * 1000).toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    second: '2-digit',
  });
}

export function clock(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '';
}

export function bytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function number(value, digits = 4) {
  if (value == null || value === '') return '–';
  if (Array.isArray(value)) return value.join(', ');
  return typeof value === 'number' && !Number.isInteger(value) ? value.toFixed(digits) : String(value);
}

const LABELS = {
  n_epochs: 'Epochs', lora_rank: 'LoRA rank', lora_alpha: 'LoRA alpha',
  lora_dropout: 'LoRA dropout', use_qlora: 'QLoRA (4-bit)', max_seq_length: 'Max sequence length',
  json_valid: 'Valid JSON', json_same_keys: 'Same JSON keys',
};

// `learning_rate_multiplier` -> `Learning rate multiplier`.
export function label(key) {
  if (LABELS[key]) return LABELS[key];
  const text = key.replaceAll('_', ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}
