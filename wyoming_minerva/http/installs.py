"""The catalog over HTTP: what can be installed and what is, install jobs with live progress, removal.

- `GET /v1/catalog` (`?kind=voice|stt|wake`, `?installed=true`, `?q=words`), `GET /v1/catalog/{id}`
- `POST /v1/catalog/{id}/install` → 202 and the job (the running one when that id is being installed already)
- `GET /v1/jobs`, `GET /v1/jobs/{id}`, `DELETE /v1/jobs/{id}` (cancel)
- `GET /v1/jobs/{id}/events`: server-sent events `progress` (state, phase, bytes, total, percent, rate), then
  one `done` or `error`; each `data` is the job as JSON with a `type`.
- `DELETE /v1/catalog/{id}`: removes an installed model no request is using (409 otherwise).
Ids are `voice:NAME`, `stt:NAME`, `wake:NAME`. The sources are the operator's settings, never a request's.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..catalog import CatalogSettings, Kind, parse_entry_id
from ..catalog.errors import CatalogError
from ..catalog.installed import InstalledModel
from ..catalog.jobs import Job
from ..catalog.listing import Listed, SourceStatus
from ..catalog.service import CatalogChange, CatalogService, ChangeHook
from ..catalog.usage import ManagerUsage
from ..wake.service import WakeWords
from .deps import EngineSet, HttpContext
from .errors import ERROR_RESPONSES, ApiError, ErrorEnvelope
from .streaming import SSE_HEADERS, SSE_MEDIA_TYPE

router = APIRouter(tags=["catalog"])

KEEPALIVE_SECONDS = 15.0
MAX_QUERY_CHARS = 200
T = TypeVar("T")


def install(app: FastAPI, service: CatalogService, dependencies: Sequence[Any] = ()) -> None:
    """Serve `service` on `app` (create_app calls this; `dependencies`: the API key scheme when one is set)."""
    app.state.minerva_catalog = service
    app.include_router(router, dependencies=list(dependencies))


def catalog_for(ctx: HttpContext, settings: CatalogSettings) -> CatalogService:
    """A CatalogService on the app's data dirs and model manager (loaded / in use / defaults from the engines)."""
    usage = ManagerUsage(ctx.manager, lambda: configured_models(ctx.engines), lambda m: program_keys(ctx.engines, m))
    return CatalogService(settings, ctx.settings.data_dirs, ctx.settings.local_files_only, usage)


def configured_models(engines: EngineSet) -> dict[Kind, str | None]:
    wake = getattr(engines, "wake", None)  # EngineSet names only stt and tts
    return {
        Kind.STT: engines.stt.model_name if engines.stt is not None else None,
        Kind.VOICE: engines.tts.default_voice if engines.tts is not None else None,
        Kind.WAKE: wake.catalog.default if isinstance(wake, WakeWords) else None,
    }


def program_keys(engines: EngineSet, model: InstalledModel) -> list[str]:
    """The ModelManager keys of the speech-to-text programs that run `model` (a program may rename its model)."""
    stt = engines.stt
    if model.kind is not Kind.STT or stt is None:
        return []
    programs = getattr(stt, "programs", ())
    return [f"stt:{p.name}" for p in programs if model.name in (getattr(p, "model", None), p.name)]


def rescan_engines(engines: EngineSet) -> ChangeHook:
    """A CatalogService.on_change hook: each engine that offers `rescan()` looks at its data dirs again, so a model
    just installed (or removed) is in (or out of) Wyoming describe and /v1/models at once."""
    by_kind = {Kind.VOICE: "tts", Kind.STT: "stt", Kind.WAKE: "wake"}

    async def rescan(change: CatalogChange) -> None:
        engine = getattr(engines, by_kind[change.kind], None)
        method = getattr(engine, "rescan", None)
        if callable(method):
            result = method()
            if inspect.isawaitable(result):
                await result

    return rescan


def service_of(request: Request) -> CatalogService:
    service = request.app.state.minerva_catalog
    assert isinstance(service, CatalogService)
    return service


Catalog = Annotated[CatalogService, Depends(service_of)]


async def answer(work: Awaitable[T]) -> T:
    """Catalog errors as HTTP errors with their own status and code."""
    try:
        return await work
    except CatalogError as err:
        raise ApiError(getattr(err, "status", 500), str(err), err.code) from err


# ---- shapes ------------------------------------------------------------------------------------


class FileCard(BaseModel):
    name: str
    size_bytes: int | None
    md5: str | None = None
    sha256: str | None = None


class JobError(BaseModel):
    code: str | None
    message: str


class JobCard(BaseModel):
    id: str
    object: Literal["catalog.job"] = "catalog.job"
    entry: str
    state: Literal["running", "done", "error", "cancelled"]
    phase: str = Field(description="queued, resolving, downloading, verifying, installing, finished")
    bytes: int
    total: int | None
    percent: float | None
    rate: int = Field(description="Bytes per second so far")
    error: JobError | None
    created: float
    finished: float | None


class CatalogItem(BaseModel):
    id: str
    object: Literal["catalog.entry"] = "catalog.entry"
    kind: Kind
    name: str
    description: str
    languages: list[str]
    quality: str | None
    speakers: int | None
    size_bytes: int | None = Field(description="Download size; null until known")
    available: bool = Field(description="In a catalog source: can be installed")
    installed: bool
    size_on_disk: int | None
    removable: bool
    loaded: bool
    in_use: bool | None = Field(description="A request holds it now (null: cannot be told)")
    default: bool = Field(description="The server's configured model of its kind")
    job: JobCard | None
    files: list[FileCard] | None = None


class Source(BaseModel):
    kind: Kind
    url: str | None
    ok: bool
    entries: int
    error: str | None


class CatalogList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CatalogItem]
    sources: list[Source]
    downloads: bool = Field(description="False when the server runs with --local-files-only")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobCard]


class Removed(BaseModel):
    id: str
    object: Literal["catalog.entry.deleted"] = "catalog.entry.deleted"
    deleted: bool = True


def job_card(job: Job) -> JobCard:
    return JobCard.model_validate(job.snapshot())


def item(listed: Listed, with_files: bool) -> CatalogItem:
    files = [FileCard(name=f.name, size_bytes=f.size, md5=f.md5, sha256=f.sha256) for f in listed.files]
    return CatalogItem(
        id=listed.id,
        kind=listed.kind,
        name=listed.name,
        description=listed.description,
        languages=list(listed.languages),
        quality=listed.quality,
        speakers=listed.speakers,
        size_bytes=listed.size,
        available=listed.available,
        installed=listed.installed,
        size_on_disk=listed.size_on_disk,
        removable=listed.removable,
        loaded=listed.loaded,
        in_use=listed.in_use,
        default=listed.default,
        job=job_card(listed.job) if listed.job else None,
        files=files if with_files else None,
    )


def source(status: SourceStatus) -> Source:
    return Source(kind=status.kind, url=status.url, ok=status.ok, entries=status.entries, error=status.error)


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorEnvelope, "description": "Unknown id"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorEnvelope, "description": "Installed already, in use, the default, or bundled"}
}


# ---- routes ------------------------------------------------------------------------------------


@router.get("/v1/catalog", summary="Models and voices: what can be installed and what is", responses=ERROR_RESPONSES)
async def list_catalog(
    catalog: Catalog,
    kind: Kind | None = None,
    installed: bool = False,
    q: Annotated[str, Query(max_length=MAX_QUERY_CHARS)] = "",
    files: bool = False,
) -> CatalogList:
    kinds = (kind,) if kind else tuple(Kind)
    listed, sources = await answer(catalog.listing(kinds, installed_only=installed, query=q))
    return CatalogList(
        data=[item(x, files) for x in listed],
        sources=[source(s) for s in sources],
        downloads=not catalog.local_files_only,
    )


@router.get("/v1/catalog/{entry_id}", summary="One entry, with its files", responses={**ERROR_RESPONSES, **NOT_FOUND})
async def get_entry(entry_id: str, catalog: Catalog) -> CatalogItem:
    kind, _ = parse_entry_id(entry_id)
    if not catalog.local_files_only:
        try:
            await catalog.sources.entry(entry_id)  # resolves its files (speech-to-text) when the source answers
        except CatalogError:
            pass  # still listed when installed; otherwise the 404 below says it is unknown
    listed, _ = await answer(catalog.listing((kind,)))
    for x in listed:
        if x.id == entry_id:
            return item(x, with_files=True)
    raise ApiError(404, f"{entry_id} is neither in the catalog nor installed", "not_in_catalog")


@router.post(
    "/v1/catalog/{entry_id}/install",
    status_code=202,
    summary="Install (download) an entry: a job to follow",
    responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
)
async def install_entry(entry_id: str, catalog: Catalog, response: Response) -> JobCard:
    job, _ = await answer(catalog.install(entry_id))
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_card(job)


@router.delete(
    "/v1/catalog/{entry_id}",
    summary="Remove an installed model that no request is using",
    responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
)
async def remove_entry(entry_id: str, catalog: Catalog) -> Removed:
    model = await answer(catalog.remove(entry_id))
    return Removed(id=model.id)


@router.get("/v1/jobs", summary="Install jobs, recent first")
async def list_jobs(catalog: Catalog) -> JobList:
    return JobList(data=[job_card(job) for job in reversed(catalog.jobs.all())])


@router.get("/v1/jobs/{job_id}", summary="One install job", responses={**ERROR_RESPONSES, **NOT_FOUND})
async def get_job(job_id: str, catalog: Catalog) -> JobCard:
    return job_card(await answer(_job(catalog, job_id)))


@router.delete("/v1/jobs/{job_id}", summary="Cancel an install job", responses={**ERROR_RESPONSES, **NOT_FOUND})
async def cancel_job(job_id: str, catalog: Catalog) -> JobCard:
    return job_card(await answer(catalog.cancel(job_id)))


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="An install's progress as server-sent events (progress…, then done or error)",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {SSE_MEDIA_TYPE: {}}, "description": "`progress`, `done`, `error`"}},
)
async def job_events(job_id: str, catalog: Catalog) -> StreamingResponse:
    job = await answer(_job(catalog, job_id))

    async def events() -> AsyncIterator[bytes]:
        async for snapshot in job.updates(KEEPALIVE_SECONDS):
            if snapshot is None:
                yield b": keep-alive\n\n"
                continue
            state = snapshot["state"]
            kind = "progress" if state == "running" else ("done" if state == "done" else "error")
            data = json.dumps({"type": kind, **snapshot}, separators=(",", ":"))
            yield f"event: {kind}\ndata: {data}\n\n".encode()

    return StreamingResponse(events(), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


async def _job(catalog: CatalogService, job_id: str) -> Job:
    return catalog.jobs.get(job_id)
