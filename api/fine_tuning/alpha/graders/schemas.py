"""The alpha graders API's bodies, as the openai client's `fine_tuning.alpha.graders` sends
and reads them. The grader objects themselves are the engine's (training/graders.py)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from training.graders import AnyGrader, Grader, GraderResult

# Documented as the graders served here; validated by the engine, which names the offending
# field of a nested grader (`grader.graders.accuracy.operation`) as pydantic's unions cannot.
GraderParam = SkipValidation[AnyGrader]


class RunGraderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: GraderParam = Field(description="The grader to run.")
    model_sample: str = Field(description="The model's output: `sample.output_text` in "
                              "templates, and `sample.output_json` when it is valid JSON.")
    item: dict[str, Any] | None = Field(None, description="The dataset item: `item` in "
                                        "templates.")


class RunGraderResponse(GraderResult):
    pass


class ValidateGraderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: GraderParam = Field(description="The grader to validate.")


class ValidateGraderResponse(BaseModel):
    grader: Grader
