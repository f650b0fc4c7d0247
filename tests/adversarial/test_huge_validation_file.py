"""A tenant gives its job a validation file hundreds of MiB large: the API node's evaluation
of the succeeded job uses at most its first `eval_max_examples` examples, and must read no
more of the file than it takes to find them (the whole file was parsed into the node's
memory, several GB for a 512 MiB file)."""

import json
from collections.abc import Iterator
from pathlib import Path

from api.background.evaluator import EngineEvaluator
from api.settings import Settings
from storage.blob import LocalBlobStore
from storage.keys import file_key
from storage.models import FineTuningJob


class _CountingStore(LocalBlobStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bytes_read = 0

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        for chunk in super().read(key, start, end):
            self.bytes_read += len(chunk)
            yield chunk


def test_the_evaluation_reads_only_the_examples_it_uses(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path / "blobs")
    line = json.dumps({"messages": [{"role": "user", "content": "Route: " + "x" * 200},
                                    {"role": "assistant", "content": "billing"}]}) + "\n"
    copies = 40_000  # about 10 MiB
    store.put(file_key("proj_a", "file-valid"), (line * 1000).encode() * (copies // 1000))
    job = FineTuningJob(id="ftjob-a", project_id="proj_a", validation_file="file-valid",
                        method={"type": "supervised"})
    settings = Settings()
    evaluator = EngineEvaluator(settings, None, store, None, None)  # type: ignore[arg-type]

    examples = evaluator.examples(job)

    assert len(examples) == settings.eval_max_examples
    assert examples[0].expected == "billing"
    # A chunk or two, not the file's copies × its lines.
    assert store.bytes_read <= 4 << 20 < len(line) * copies
