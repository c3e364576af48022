"""The route table: every HTTP operation with its handler, who may call it, its
message types, and which run in the process leading their task. The OpenAPI document
and the router are both built from it."""

from __future__ import annotations

import re

from aiohttp import web

from edge_sdk.protocol import ENCODINGS
from edge_sdk.protocol.messages import (
    JSON_INT,
    CheckInReply,
    CheckInRequest,
    EnrollReply,
    EnrollRequest,
    EvaluationAck,
    EvaluationReport,
    FailureReport,
    HeldoutAck,
    HeldoutReport,
    SecAggKeys,
    SecAggReveal,
    SecAggShares,
    SecAggView,
    TaskCreate,
    TaskDescription,
    TaskList,
    UploadAck,
    UploadBegin,
    UploadSession,
)

from .admin_handlers import (
    admin_create_task,
    admin_heldout,
    admin_list_tasks,
    admin_pause,
    admin_resume,
    admin_task,
)
from .device_handlers import (
    begin_upload,
    check_in,
    commit_upload,
    download_model,
    enroll,
    report_failure,
    submit_evaluation,
    upload_chunk,
    upload_status,
    upload_update,
)
from .openapi import BINARY, Operation, Query, document
from .secagg_handlers import secagg_keys, secagg_masked, secagg_reveal, secagg_shares, secagg_state
from .status_handlers import dashboard, metrics_endpoint, status

__all__ = ["LARGE_BODY_HANDLERS", "LED_HANDLERS", "OPENAPI", "OPERATIONS", "routes"]


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


# calls whose body may be as large as max_body_bytes (every other body: max_json_bytes)
LARGE_BODY_HANDLERS = frozenset(
    {upload_update, upload_chunk, secagg_masked, secagg_shares, secagg_reveal}
)

# calls that need the task's coordinator, so run in the process leading the task, and
# where each names its task (middleware.leader_middleware)
LED_HANDLERS = {check_in: "body", commit_upload: "upload"} | dict.fromkeys(
    (
        upload_update,
        report_failure,
        submit_evaluation,
        secagg_state,
        secagg_keys,
        secagg_shares,
        secagg_masked,
        secagg_reveal,
        begin_upload,
        admin_pause,
        admin_resume,
    ),
    "path",
)

_ROUND_ID = Query("round_id", {"type": "integer", "minimum": 0, "maximum": JSON_INT}, True)
_VERSION = Query("version", {"type": "integer", "minimum": 0, "maximum": JSON_INT})
_ENCODING = Query("encoding", {"type": "string", "enum": sorted(ENCODINGS)})
_BASE = Query("base", {"type": "integer", "minimum": 0, "maximum": JSON_INT})
OPERATIONS = [
    Operation(
        "POST",
        "/v1/enroll",
        enroll,
        "Enroll a device: register its Ed25519 public key with the population's secret",
        None,
        EnrollRequest,
        EnrollReply,
        201,
    ),
    Operation(
        "POST",
        "/v1/checkin",
        check_in,
        "Check in: an assignment (task, round, model "
        "version, deadline, plan), an evaluation, or a time to come back",
        "device",
        CheckInRequest,
        CheckInReply,
    ),
    Operation(
        "GET",
        "/v1/tasks/{task_id}/model",
        download_model,
        "Download a model version "
        "(wire format; ?encoding=q8 int8 with per-chunk scales, f16, f32 the default; "
        "&base=B: the difference from version B's whole download, which the device "
        "holds); ETag and Range supported",
        "device",
        reply=BINARY,
        query=(_VERSION, _ENCODING, _BASE),
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/updates",
        upload_update,
        "Upload an update (wire format). Idempotent by the update's key",
        "device",
        BINARY,
        UploadAck,
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/failures",
        report_failure,
        "Report that this device gave up its assignment",
        "device",
        FailureReport,
        status=204,
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/evaluations",
        submit_evaluation,
        "Report federated evaluation metric sums for a model version",
        "device",
        EvaluationReport,
        EvaluationAck,
    ),
    Operation(
        "GET",
        "/v1/tasks/{task_id}/secagg",
        secagg_state,
        "Secure aggregation: this device's view of the current round (poll between steps)",
        "device",
        reply=SecAggView,
        query=(_ROUND_ID,),
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/secagg/keys",
        secagg_keys,
        "Secure aggregation step 0: advertise two X25519 public keys after training",
        "device",
        SecAggKeys,
        SecAggView,
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/secagg/shares",
        secagg_shares,
        "Secure "
        "aggregation step 1: encrypted Shamir shares for every peer, keyed by the "
        "peer's index",
        "device",
        SecAggShares,
        SecAggView,
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/secagg/masked",
        secagg_masked,
        "Secure aggregation step 2: the masked input (magic EFLM, uint64 length, uint32 LE values)",
        "device",
        BINARY,
        SecAggView,
        query=(_ROUND_ID,),
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/secagg/reveal",
        secagg_reveal,
        "Secure "
        "aggregation step 3: for each peer, the self-mask share ('b') of a survivor or "
        "the key share ('s') of a dropped device, in decimal",
        "device",
        SecAggReveal,
        SecAggView,
    ),
    Operation(
        "POST",
        "/v1/tasks/{task_id}/uploads",
        begin_upload,
        "Start a resumable upload of a large update",
        "device",
        UploadBegin,
        UploadSession,
        201,
    ),
    Operation(
        "GET",
        "/v1/uploads/{upload_id}",
        upload_status,
        "How many bytes the server holds",
        "device",
        reply=UploadSession,
    ),
    Operation(
        "PUT",
        "/v1/uploads/{upload_id}",
        upload_chunk,
        "Append a chunk at ?offset= (idempotent)",
        "device",
        BINARY,
        UploadSession,
        query=(Query("offset", {"type": "integer", "minimum": 0, "maximum": JSON_INT}, True),),
    ),
    Operation(
        "POST",
        "/v1/uploads/{upload_id}/commit",
        commit_upload,
        "Verify and submit the completed upload",
        "device",
        reply=UploadAck,
    ),
    Operation(
        "POST",
        "/v1/admin/tasks",
        admin_create_task,
        "Create a task from a bundle",
        "admin",
        TaskCreate,
        TaskDescription,
        201,
    ),
    Operation("GET", "/v1/admin/tasks", admin_list_tasks, "List tasks", "admin", reply=TaskList),
    Operation(
        "GET",
        "/v1/admin/tasks/{task_id}",
        admin_task,
        "Inspect a task: state, funnel, versions, round events",
        "admin",
        reply=TaskDescription,
    ),
    Operation(
        "POST",
        "/v1/admin/tasks/{task_id}/pause",
        admin_pause,
        "Pause a task",
        "admin",
        reply=TaskDescription,
    ),
    Operation(
        "POST",
        "/v1/admin/tasks/{task_id}/resume",
        admin_resume,
        "Resume a task",
        "admin",
        reply=TaskDescription,
    ),
    Operation(
        "GET",
        "/v1/admin/tasks/{task_id}/model",
        download_model,
        "Download the current model, or ?version=V (wire format); X-Model-Version names it",
        "admin",
        reply=BINARY,
        query=(_VERSION, _ENCODING, _BASE),
    ),
    Operation(
        "POST",
        "/v1/admin/tasks/{task_id}/versions/{version}/heldout",
        admin_heldout,
        "Record a model version's metrics on the server's held-out set (posted by "
        "the held-out evaluator, server_eval/)",
        "admin",
        HeldoutReport,
        HeldoutAck,
    ),
    Operation("GET", "/v1/status", status, "Aggregate status for the dashboard", reply=TaskList),
    Operation("GET", "/metrics", metrics_endpoint, "Prometheus metrics", reply="text/plain"),
    Operation("GET", "/dashboard", dashboard, "The dashboard page", reply="text/html"),
    Operation("GET", "/openapi.json", openapi, "This document", reply="application/json"),
]
# what a path parameter may hold, else the router answers 404 before any middleware asks
# the store about it (no control characters: PostgreSQL text cannot hold U+0000)
PATH_PATTERNS = {"task_id": r"[^/\x00-\x1f\x7f]{1,128}", "upload_id": r"[0-9a-f]{32}"}
OPENAPI = document(OPERATIONS, PATH_PATTERNS)


def _route_path(path: str) -> str:
    return re.sub(
        r"{(\w+)}",
        lambda m: "{%s:%s}" % (m[1], PATH_PATTERNS[m[1]]) if m[1] in PATH_PATTERNS else m[0],
        path,
    )


def routes() -> list[web.RouteDef]:
    return [web.route(op.method, _route_path(op.path), op.handler) for op in OPERATIONS]
