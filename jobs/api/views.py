"""GET /api/jobs/<id> and GET /api/jobs?ids=...: an async job's status and result, for its owner only."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import openapi
from jobs.selectors import JOB_ID, job_not_found, job_record, jobs_visible, malformed_job_id
from payments.api.authentication import request_api_key
from server402.api_errors import ApiError

MAX_IDS = 10
MAX_SECRETS = MAX_IDS

_SECRET_PARAMETER = OpenApiParameter(
    "X-Job-Secret", type=str, location=OpenApiParameter.HEADER, required=False,
    description="The jobSecret the submission answered with; several, separated by commas, for several jobs. "
                "Not needed for jobs submitted with the API key the request carries.")
_ID_PARAMETER = OpenApiParameter("job_id", str, OpenApiParameter.PATH, pattern=f"^{JOB_ID.pattern}$",
                                 description="The jobId the submission answered with.")
_IDS_PARAMETER = OpenApiParameter(
    "ids", str, OpenApiParameter.QUERY, required=True,
    pattern=rf"^{JOB_ID.pattern}(,{JOB_ID.pattern}){{0,{MAX_IDS - 1}}}$",
    description=f"1 to {MAX_IDS} job ids separated by commas.")


def _secrets(request) -> list[str]:
    presented = [secret.strip() for secret in request.headers.get("X-Job-Secret", "").split(",") if secret.strip()]
    return presented[:MAX_SECRETS]


def _answer(body: dict, status_code: int = status.HTTP_200_OK, *, pending: bool = False) -> Response:
    # Results are private and change until the job ends: never cached on the way.
    headers = {"Cache-Control": "no-store"}
    if pending:
        headers["Retry-After"] = str(settings.JOB_RETRY_AFTER_SECONDS)
    return Response(body, status=status_code, headers=headers)


class JobDetailApi(APIView):
    """One job: 200 with its record, or 404 not_found for a job that is unknown, expired or someone else's."""

    @extend_schema(
        operation_id="get_job", summary="Read an async job", tags=["jobs"],
        description="The status of a job submitted with `Prefer: respond-async`, with its result once it "
                    "succeeded or its error once it failed. Only its owner reads it: the API key it was "
                    "submitted with, or its jobSecret in X-Job-Secret.",
        parameters=[_ID_PARAMETER, _SECRET_PARAMETER, openapi.response_header("Retry-After", codes=[200])],
        auth=openapi.API_KEY_OPTIONAL,
        responses={200: OpenApiResponse(openapi.schema_ref("JobRecord"),
                                        description="The job; Retry-After while it is queued or processing."),
                   400: openapi.error("The id is not a job id."),
                   401: openapi.error("The API key is unknown or revoked."),
                   404: OpenApiResponse(openapi.schema_ref("JobRecord"),
                                        description="status not_found: no such job, its result expired, or it is "
                                                    "not the caller's.")},
    )
    def get(self, request, job_id):
        if not JOB_ID.fullmatch(job_id):
            raise ApiError(malformed_job_id(job_id), field="job_id")
        api_key = request_api_key(request, required=False)
        job = jobs_visible(job_ids=[job_id], api_key=api_key, secrets=_secrets(request)).get(job_id)
        if job is None:
            return _answer(job_not_found(job_id), status.HTTP_404_NOT_FOUND)
        return _answer(job_record(job), pending=not job.is_finished)


class JobListApi(APIView):
    """Up to ten jobs at once, in the order asked, each with its record or not_found."""

    @extend_schema(
        operation_id="get_jobs", summary="Read several async jobs", tags=["jobs"],
        description=f"Like GET /api/jobs/{{job_id}} for 1 to {MAX_IDS} jobs at once. Each id is answered in the "
                    "order asked (repeated ids once), with status not_found for one that is unknown, expired or "
                    "not the caller's.",
        parameters=[_IDS_PARAMETER, _SECRET_PARAMETER, openapi.response_header("Retry-After", codes=[200])],
        auth=openapi.API_KEY_OPTIONAL,
        responses={200: OpenApiResponse(openapi.schema_ref("JobList"),
                                        description="The jobs; Retry-After while any is queued or processing."),
                   400: openapi.error(f"ids is missing or empty, holds more than {MAX_IDS} ids, or one of them is "
                                      "not a job id."),
                   401: openapi.error("The API key is unknown or revoked.")},
    )
    def get(self, request):
        given = request.query_params.getlist("ids")
        if not given:
            raise ApiError(f"ids is required: GET /api/jobs?ids=<jobId>,<jobId> with 1 to {MAX_IDS} ids", field="ids")
        job_ids = [job_id.strip() for value in given for job_id in value.split(",") if job_id.strip()]
        if not job_ids:
            raise ApiError(f"ids holds no job id: give 1 to {MAX_IDS} ids separated by commas", field="ids")
        if len(job_ids) > MAX_IDS:
            raise ApiError(f"ids holds {len(job_ids)} ids; at most {MAX_IDS} are read at once", field="ids")
        malformed = next((job_id for job_id in job_ids if not JOB_ID.fullmatch(job_id)), None)
        if malformed is not None:
            raise ApiError(malformed_job_id(malformed), field="ids")
        api_key = request_api_key(request, required=False)
        unique = list(dict.fromkeys(job_ids))
        visible = jobs_visible(job_ids=unique, api_key=api_key, secrets=_secrets(request))
        records = [job_record(visible[job_id]) if job_id in visible else job_not_found(job_id) for job_id in unique]
        return _answer({"jobs": records}, pending=any(not job.is_finished for job in visible.values()))
