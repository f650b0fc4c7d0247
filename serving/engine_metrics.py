"""What a vLLM replica says about its load, from its Prometheus `/metrics` text."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineLoad:
    running: int
    waiting: int


def parse_engine_load(text: str) -> EngineLoad:
    """Sums `vllm:num_requests_running` and `vllm:num_requests_waiting` over their label sets
    (one per model name and engine)."""
    totals = {"vllm:num_requests_running": 0.0, "vllm:num_requests_waiting": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return EngineLoad(int(totals["vllm:num_requests_running"]),
                      int(totals["vllm:num_requests_waiting"]))
