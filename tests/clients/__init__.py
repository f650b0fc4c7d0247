"""The client libraries people build on, unchanged, against a real tuneserve: LangChain's
ChatOpenAI, the OpenAI Agents SDK and the official Node SDK (from `node/`'s lock file, which
`make test` installs). Their versions are pinned in pyproject.toml's `dev` extra and in
`node/package.json`; docs/api-behaviour.md lists them."""
