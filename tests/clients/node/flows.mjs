// The official openai Node SDK's common flows against a tuneserve, as a user writes them: the
// client reads OPENAI_BASE_URL and OPENAI_API_KEY itself; TUNESERVE_MODEL names the base.
// Prints one JSON object of what it saw, for tests/clients/test_node_sdk.py to check.
import OpenAI, { toFile } from "openai";

const model = process.env.TUNESERVE_MODEL;
const client = new OpenAI({ maxRetries: 0 });
const seen = {};

// Ten chats, the fewest a fine-tuning file may hold.
const training = Array.from({ length: 10 }, (_, i) => JSON.stringify({
  messages: [
    { role: "user", content: `What is ${i} plus ${i}?` },
    { role: "assistant", content: String(2 * i) },
  ],
})).join("\n") + "\n";

// A file in one request, then its metadata and bytes back.
const file = await client.files.create({
  file: await toFile(Buffer.from(training), "train.jsonl"), purpose: "fine-tune",
});
const content = await (await client.files.content(file.id)).text();
seen.file = {
  id: file.id, status: (await client.files.retrieve(file.id)).status,
  bytes: file.bytes, sent_bytes: Buffer.byteLength(training), content_equal: content === training,
};

// The same bytes as an upload in two parts.
const half = Math.floor(training.length / 2);
const upload = await client.uploads.create({
  bytes: Buffer.byteLength(training), filename: "parts.jsonl", mime_type: "text/jsonl",
  purpose: "fine-tune",
});
const partIds = [];
for (const chunk of [training.slice(0, half), training.slice(half)]) {
  const part = await client.uploads.parts.create(upload.id, {
    data: await toFile(Buffer.from(chunk), "part"),
  });
  partIds.push(part.id);
}
const completed = await client.uploads.complete(upload.id, { part_ids: partIds });
seen.upload = {
  status: completed.status, file_id: completed.file?.id,
  content_equal: await (await client.files.content(completed.file.id)).text() === training,
};

// Auto-paging: one file a page, the SDK following `after` (the suite's shared server holds
// other tests' files too, so it stops at the two made here).
const listed = [];
for await (const f of client.files.list({ limit: 1 })) {
  listed.push(f.id);
  if (listed.includes(file.id) && listed.includes(completed.file.id)) break;
}
seen.files_listed = listed;

// A job created, found in the list, cancelled.
const job = await client.fineTuning.jobs.create({
  model, training_file: completed.file.id, suffix: "node",
});
let listedJob = false;
for await (const j of client.fineTuning.jobs.list({ limit: 1 })) {
  if (j.id === job.id) {
    listedJob = true;
    break;
  }
}
const cancelled = await client.fineTuning.jobs.cancel(job.id);
seen.job = {
  id: job.id, model: job.model, listed: listedJob, cancelled: cancelled.status,
  retrieved: (await client.fineTuning.jobs.retrieve(job.id)).status,
};

// A streamed chat whose last chunk carries the usage.
const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Say hello." }], max_completion_tokens: 16,
  stream: true, stream_options: { include_usage: true },
});
let text = "";
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  text += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
seen.chat_stream = { text, chunks, usage };

// Responses, whole and streamed.
const response = await client.responses.create({
  model, input: "Say hello.", max_output_tokens: 16, temperature: 0,
});
seen.response = { id: response.id, status: response.status, output_text: response.output_text,
                  usage: response.usage };
const events = [];
let streamed = "";
const responseStream = client.responses.stream({
  model, input: "Say hello.", max_output_tokens: 16, temperature: 0,
});
for await (const event of responseStream) {
  events.push(event.type);
  if (event.type === "response.output_text.delta") streamed += event.delta;
}
const final = await responseStream.finalResponse();
seen.response_stream = { first: events[0], last: events.at(-1), text: streamed,
                         status: final.status, final_text: final.output_text };

console.log(JSON.stringify(seen));
