"""The Tinker training API (`/api/v1`), as Thinking Machines' `tinker` SDK 0.38 speaks it: a
second way in to the same projects, keys, trainers and serving as the OpenAI-style `/v1`."""
