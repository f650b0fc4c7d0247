"""`/v1/fine_tuning/alpha/graders/run` and `/validate`, on the grader engine
(training/graders.py).

A grader this server cannot run is a 400 naming its field (`param`), on both routes. What
goes wrong while a valid grader runs (an unresolved template variable, a judge that did not
answer a number, a formula without a value) is in the run's `metadata.errors` flags with a
reward of 0, as OpenAI answers it; so a formula that does not parse is a 400 from `/validate`
and a `formula_parse_error` from `/run`. A grading past its bounds (a template rendering too
much, texts too long to compare) is a 400 naming the field too."""

from fastapi import APIRouter

from api.deps import AppServices, CurrentProject
from api.errors import APIError, error_responses
from api.fine_tuning.alpha.graders.judge import engine_judge
from api.fine_tuning.alpha.graders.schemas import (
    RunGraderRequest,
    RunGraderResponse,
    ValidateGraderRequest,
    ValidateGraderResponse,
)
from training import graders

router = APIRouter(prefix="/fine_tuning/alpha/graders", tags=["fine-tuning"],
                   responses=error_responses(429))


def _bad_grader(err: graders.GraderError) -> APIError:
    return APIError(400, err.message, param=err.param, code=err.code)


@router.post("/run", response_model=RunGraderResponse)
async def run_grader(body: RunGraderRequest, services: AppServices,
                     project: CurrentProject) -> graders.GraderResult:
    try:
        return await graders.run_grader(graders.parse_grader(body.grader), body.model_sample,
                                        body.item, engine_judge(services, project.id))
    except graders.GraderError as err:
        raise _bad_grader(err) from None


# The grader comes back as it was read, without the optional fields it left out.
@router.post("/validate", response_model=ValidateGraderResponse,
             response_model_exclude_none=True)
def validate_grader(body: ValidateGraderRequest,
                    project: CurrentProject) -> ValidateGraderResponse:
    try:
        return ValidateGraderResponse(grader=graders.validate_grader(body.grader))
    except graders.GraderError as err:
        raise _bad_grader(err) from None
