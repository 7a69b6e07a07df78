"""The ASGI app behind `clipsql serve`: server-rendered pages, a JSON API under /api/, pictures.

Pages are Jinja2 templates plus one small hand-written script and stylesheet shipped in the
package (no CDN: the app works offline). The script uses the JSON API for what changes in
place (gallery paging, the enlarged photo, the analytics chart); everything a page shows on
load comes from the same backend functions the API calls. FastAPI documents the API at
/openapi.json (its interactive docs pages load scripts from a CDN, so they are switched off).

Errors never show a stack trace: clipsql's own errors become their message with a 4xx code
(400 usage, 404 not found, 413 too large, 415 not an image, 422 malformed parameter), as JSON
under /api/ and as an HTML page elsewhere.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ClipsqlError, DatabaseError, LockedError, ModelError, NotFoundError, UsageError
from ..selection import selection_kinds
from .backend import MAX_GALLERY_PAGE, WebBackend
from .imagery import TooLarge, UnsupportedImage
from .params import DISTANCE_RANGE, MAX_K, MAX_RANGE_ROWS, SearchSettings

HERE = Path(__file__).resolve().parent
MAX_UPLOAD_BYTES = 10 << 20
FORM_OVERHEAD = 64 << 10  # multipart boundaries and the settings fields around an upload
CACHE_CONTROL = "public, max-age=86400"
log = logging.getLogger("clipsql.web")


# -- response models (they make /openapi.json say what each endpoint returns) ---------------------------
class ModelInfo(BaseModel):
    name: str
    dim: int
    encoder: str
    vectors: int
    text: bool
    default: bool


class SetChoice(BaseModel):
    kind: str
    value: str
    label: str
    photos: int


class GalleryPhoto(BaseModel):
    photo_id: str
    description: str
    photographer: str
    thumb: str


class Gallery(BaseModel):
    model: str
    key_set: list[str]
    text: str
    page: int
    per_page: int
    pages: int
    total: int
    seed: int
    photos: list[GalleryPhoto]


class KeyInfo(BaseModel):
    kind: str
    photo_id: str | None
    text: list[str]
    minus: list[str]
    upload_id: str | None
    image_url: str | None
    label: str
    description: str
    image: str | None


class ResultRow(BaseModel):
    rank: int
    photo_id: str
    distance: float
    description: str
    photographer: str
    thumb: str


class SearchResponse(BaseModel):
    key: KeyInfo
    model: str
    metric: str
    predicate: str
    k: int
    radius: float | None
    join_set: list[str]
    plan: str
    warnings: list[str]
    seconds: float
    total: int
    results: list[ResultRow]


class UploadInfo(BaseModel):
    upload_id: str
    width: int
    height: int
    image: str


class PhotoInfo(BaseModel):
    photo_id: str
    photo_url: str
    photo_description: str
    ai_description: str
    photographer_username: str
    photographer_name: str
    photo_location_name: str
    photo_location_country: str
    photo_location_city: str
    photo_width: int | None
    photo_height: int | None
    photo_submitted_at: str | None
    keywords: list[str]
    collections: list[str]
    downloads: int
    thumb: str
    large: str


class Downloads(BaseModel):
    photo_id: str
    downloads: int


class KeywordCount(BaseModel):
    keyword: str
    downloads: int


class Analytics(BaseModel):
    downloads: list[Downloads]
    most_downloaded: str | None
    most_downloaded_downloads: int
    keywords: list[KeywordCount]


class ErrorBody(BaseModel):
    error: str
    status: int


# -- request parsing --------------------------------------------------------------------------------------
def search_settings(
    key_set: Annotated[list[str], Query(description="the key image's set: all or KIND:VALUE (repeat to intersect)")] = [],  # noqa: B006
    join_set: Annotated[list[str], Query(description="the set searched (joined with): all or KIND:VALUE")] = [],  # noqa: B006
    model: Annotated[str, Query(description="a loaded model (default: the server's)")] = "",
    metric: Annotated[str, Query(description="cosine or l2 (Euclidean) distance")] = "cosine",
    predicate: Annotated[str, Query(description="knn (the k nearest) or range (all within radius)")] = "knn",
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many results for knn")] = 10,
    radius: Annotated[float | None, Query(ge=0, le=2, description="the threshold for range: distance 0..2")] = None,
    method: Annotated[str, Query(description="auto, hnsw, ivf or exact")] = "auto",
) -> SearchSettings:
    key_set, join_set = [v for v in key_set if v.strip()], [v for v in join_set if v.strip()]
    settings = SearchSettings(key_set=key_set, join_set=join_set, model=model, metric=metric, predicate=predicate, k=k,
                              radius=radius, method=method)
    settings.check()
    settings.key_selection  # noqa: B018 - a bad set is reported before any work
    settings.join_selection  # noqa: B018
    return settings


def status_for(exc: ClipsqlError) -> int:
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, UnsupportedImage):
        return 415
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, LockedError):
        return 503
    if isinstance(exc, (UsageError, ModelError)):
        return 400
    if isinstance(exc, DatabaseError):
        return 500
    return 500


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


class UploadLimit:
    """Refuse request bodies over the limit with 413: at once when Content-Length says so, else as
    soon as the bytes read pass it (a chunked upload is buffered up to the limit, then replayed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + FORM_OVERHEAD
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send)
            return
        events, received = [], 0
        while True:
            event = await receive()
            events.append(event)
            if event["type"] != "http.request":
                break
            received += len(event.get("body", b""))
            if received > limit:
                await self._refuse(scope, receive, send)
                return
            if not event.get("more_body", False):
                break

        async def replay() -> dict:
            return events.pop(0) if events else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        message = f"the upload is larger than the limit of {self.max_bytes // (1 << 20)} MB"
        status = 413
        if scope["path"].startswith("/api/"):
            response: Response = JSONResponse({"error": message, "status": status}, status_code=status)
        else:
            response = HTMLResponse(_plain_error_page(message, status), status_code=status)
        await response(scope, receive, send)


def _plain_error_page(message: str, status: int) -> str:
    from html import escape

    return (f"<!doctype html><meta charset=utf-8><title>{status}</title><link rel=stylesheet href=/static/app.css>"
            f"<main class=error-page><h1>{status}</h1><p class=error>{escape(message)}</p>"
            "<p><a href=/>Back to the start page</a></p></main>")


def create_app(backend: WebBackend, *, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The app for one backend (its database stays open for the app's lifetime)."""
    app = FastAPI(title="clipsql", version=__version__, docs_url=None, redoc_url=None,
                  description="Image search as SQL: pick a key image (or text, or an upload) and see its nearest "
                              "photos in a set, with the tutorial's download analytics.")
    app.state.backend = backend
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    selection_help = ("a further condition the photos must meet, KIND:VALUE with KIND one of "
                      + ", ".join(selection_kinds()))
    templates.env.globals.update(max_k=MAX_K, distance_range=DISTANCE_RANGE, max_upload_mb=max_upload_bytes >> 20,
                                 version=__version__, selection_help=selection_help)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)

    def error_response(request: Request, message: str, status: int) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return templates.TemplateResponse(request, "error.html", {"message": message, "status": status},
                                          status_code=status)

    @app.exception_handler(ClipsqlError)
    async def clipsql_error(request: Request, exc: ClipsqlError) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(request, str(exc), status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error.get("loc", ())[1:]) or "request"
            given = error.get("input")
            suffix = f" (got {given!r})" if isinstance(given, (str, int, float)) else ""
            parts.append(f"{name}: {error.get('msg', 'invalid')}{suffix}")
        return error_response(request, "; ".join(parts) or "invalid request", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no page or API endpoint at {request.url.path}"
        return error_response(request, message, exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(request, f"internal error ({type(exc).__name__}); the server log has the details", 500)

    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 422)}

    # -- JSON API ------------------------------------------------------------------------------------------
    @app.get("/api/models", response_model=list[ModelInfo], tags=["api"], summary="The loaded embedding models")
    def api_models() -> list[dict[str, Any]]:
        return backend.models()

    @app.get("/api/sets", response_model=list[SetChoice], tags=["api"],
             summary="Image sets to choose from: all photos, then the largest collections, keywords, countries")
    def api_sets(per_kind: Annotated[int, Query(ge=1, le=100)] = 15) -> list[dict[str, Any]]:
        return backend.set_choices(per_kind)

    @app.get("/api/gallery", response_model=Gallery, tags=["api"], responses=errors,
             summary="A page of the key set's photos to pick a key image from (shuffled with a seed)")
    def api_gallery(
        key_set: Annotated[list[str], Query()] = [],  # noqa: B006
        model: str = "",
        q: Annotated[str, Query(max_length=100, description="keyword or description words")] = "",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(ge=1, le=MAX_GALLERY_PAGE)] = 24,
        seed: Annotated[int, Query(ge=0, lt=2**63, description="0: id order; else a shuffle")] = 0,
    ) -> dict[str, Any]:
        return backend.gallery(key_set=key_set, model=model or None, text=q, page=page, per_page=per_page, seed=seed)

    @app.get("/api/search", response_model=SearchResponse, tags=["api"], responses=errors,
             summary="Nearest photos (kNN or range) to a photo, texts, an uploaded image or an image URL")
    def api_search(
        settings: Annotated[SearchSettings, Depends(search_settings)],
        photo_id: Annotated[str, Query(description="a photo in the database (excluded from its results)")] = "",
        text: Annotated[list[str], Query(description="texts to search for (CLIP models); repeatable")] = [],  # noqa: B006
        minus: Annotated[list[str], Query(description="texts subtracted from the text query")] = [],  # noqa: B006
        upload: Annotated[str, Query(description="an id from POST /api/uploads")] = "",
        image_url: Annotated[str, Query(description="an http(s) image URL")] = "",
    ) -> dict[str, Any]:
        key = backend.key_from(photo_id=photo_id, text=text, minus=minus, upload=upload, image_url=image_url)
        return backend.search(key, settings).as_dict()

    @app.post("/api/uploads", response_model=UploadInfo, tags=["api"],
              responses={**errors, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
              summary=f"Upload an image (at most {max_upload_bytes >> 20} MB) to search with: /api/search?upload=ID")
    def api_upload(file: Annotated[UploadFile, File(description="a JPEG, PNG, WebP, GIF... image")]) -> dict[str, Any]:
        item = _read_upload(file)
        return {"upload_id": item.upload_id, "width": item.image.width, "height": item.image.height,
                "image": f"/uploads/{item.upload_id}"}

    @app.get("/api/photos/{photo_id}", response_model=PhotoInfo, tags=["api"], responses=errors,
             summary="One photo's metadata: photographer, description, keywords, collections, downloads")
    def api_photo(photo_id: str) -> dict[str, Any]:
        return backend.photo_info(photo_id)

    @app.get("/api/analytics", response_model=Analytics, tags=["api"], responses=errors,
             summary="Downloads per photo (in the given order) and the top download keywords of the most downloaded")
    def api_analytics(
        ids: Annotated[list[str], Query(description="photo ids, ranked; repeatable")] = [],  # noqa: B006
        n: Annotated[int, Query(ge=1, le=50, description="how many keywords")] = 5,
    ) -> dict[str, Any]:
        return backend.analytics(ids, n)

    def _read_upload(file: UploadFile) -> Any:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise TooLarge(f"{file.filename or 'the upload'}: larger than the limit of {max_upload_bytes >> 20} MB")
        return backend.add_upload(data, file.filename or "")

    # -- pictures --------------------------------------------------------------------------------------------
    @app.get("/thumbs/{photo_id}", tags=["pictures"], response_class=Response,
             summary="A photo as JPEG from the local cache (size small or large), with ETag and Cache-Control")
    def thumb(photo_id: str, request: Request, size: str = "small") -> Response:
        data, etag = backend.thumbnail(photo_id, size, request.headers.get("if-none-match"))
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if data is None:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/uploads/{upload_id}", tags=["pictures"], response_class=Response, summary="An uploaded image as JPEG")
    def upload_image(upload_id: str, request: Request, size: str = "small") -> Response:
        data, etag = backend.upload_thumbnail(upload_id, size)
        headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
        if etag in (request.headers.get("if-none-match") or ""):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    # -- pages -----------------------------------------------------------------------------------------------
    def page_context(settings: SearchSettings) -> dict[str, Any]:
        models = backend.models()
        if not models:
            raise NotFoundError("no embeddings are loaded; run `clipsql demo` or `clipsql run` first")
        model = backend.resolve(settings.model or None).name
        return {"settings": settings, "models": models, "model": model, "sets": backend.set_choices(),
                "max_range_rows": MAX_RANGE_ROWS}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def start_page(
        request: Request,
        settings: Annotated[SearchSettings, Depends(search_settings)],
        q: Annotated[str, Query(max_length=100)] = "",
        page: Annotated[int, Query(ge=1)] = 1,
        seed: Annotated[int, Query(ge=0, lt=2**63)] = 0,
    ) -> Response:
        context = page_context(settings)
        gallery = backend.gallery(key_set=settings.key_set, model=settings.model or None, text=q, page=page, seed=seed)
        return templates.TemplateResponse(request, "index.html", {**context, "gallery": gallery, "view": None,
                                                                  "next_seed": secrets.randbelow(2**31) + 1})

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    def results_page(
        request: Request,
        settings: Annotated[SearchSettings, Depends(search_settings)],
        photo_id: str = "",
        text: Annotated[list[str], Query()] = [],  # noqa: B006
        minus: Annotated[list[str], Query()] = [],  # noqa: B006
        upload: str = "",
        image_url: str = "",
        mode: str = "",
    ) -> Response:
        # One form carries every kind of key; the button pressed (mode) says which one is meant.
        if mode == "text":
            photo_id = upload = image_url = ""
            if not any(t.strip() for t in text):
                raise UsageError("type a text to search for")
        elif mode == "url":
            photo_id, upload, text, minus = "", "", [], []
            if not image_url.strip():
                raise UsageError("paste an image URL to search with")
        elif mode == "key":
            if photo_id or upload:
                text, minus, image_url = [], [], ""
            elif any(t.strip() for t in text):
                image_url = ""
        elif mode:
            raise UsageError(f"mode must be text, url or key, got {mode!r}")
        key = backend.key_from(photo_id=photo_id, text=text, minus=minus, upload=upload, image_url=image_url)
        context = page_context(settings)
        view = backend.search(key, settings)
        return templates.TemplateResponse(request, "results.html", {**context, "view": view, "key": view.key})

    @app.post("/upload", include_in_schema=False)
    def upload_page(
        file: Annotated[UploadFile, File()],
        key_set: Annotated[list[str], Form()] = [],  # noqa: B006
        join_set: Annotated[list[str], Form()] = [],  # noqa: B006
        model: Annotated[str, Form()] = "",
        metric: Annotated[str, Form()] = "cosine",
        predicate: Annotated[str, Form()] = "knn",
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        radius: Annotated[float | None, Form(ge=0, le=2)] = None,
        method: Annotated[str, Form()] = "auto",
    ) -> Response:
        settings = search_settings(key_set, join_set, model, metric, predicate, k, radius, method)
        if not file.filename and not file.size:
            raise UsageError("choose an image file to upload first")
        item = _read_upload(file)
        return RedirectResponse(f"/search?{settings.query_string(upload=item.upload_id)}", status_code=303)

    return app
