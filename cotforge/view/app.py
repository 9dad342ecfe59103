"""`cotforge view`: a Starlette app over run folders, served by uvicorn.

Starlette + uvicorn: a small ASGI stack with routing, form parsing, static files (with path
containment) and trusted-host checks done by maintained code. Jinja2 renders the pages with
autoescaping on, so every value from a run is escaped; model text goes through render.py.
Runs are named by their position on the command line (`/run/0`): no request carries a path.
Page handlers are plain functions, which Starlette runs in its thread pool: a slow DuckDB scan on a
big run does not stall the other requests.
"""

from __future__ import annotations

import hmac
import secrets
import sys
import threading
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cotforge.errors import CotforgeError
from cotforge.io.review import DECISIONS, append_review
from cotforge.view.data import RunView, SampleFilter, compare
from cotforge.view.render import markdown_html

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "cotforge_token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


def templates() -> Environment:
    env = Environment(loader=PackageLoader("cotforge.view", "templates"), autoescape=select_autoescape(default=True))
    env.filters["markdown"] = lambda text: Markup(markdown_html(text))
    env.filters["pct"] = lambda value: "" if value is None else f"{100 * value:.1f}%"
    env.filters["num"] = lambda value: "" if value is None else f"{value:,}" if isinstance(value, int) else value
    return env


class ViewApp:
    """The pages; one instance per server, holding the runs, the CSRF secret and the access token."""

    def __init__(self, runs: list[Path], token: str | None = None, reviewer: str | None = None):
        self.runs = [RunView(Path(path).resolve(), index) for index, path in enumerate(runs)]
        for run in self.runs:
            run.manifest()  # one clear line for a folder that is not a run
        self.token, self.reviewer = token, reviewer
        self.csrf = secrets.token_urlsafe(24)  # forms carry it; a page from another origin cannot read it
        self.env = templates()

    def page(self, name: str, request: Request, status_code: int = 200, **context) -> HTMLResponse:
        html = self.env.get_template(name).render(runs=self.runs, csrf=self.csrf, request=request, **context)
        return HTMLResponse(html, status_code=status_code)

    def run(self, request: Request) -> RunView:
        index = request.path_params["run"]
        if not 0 <= index < len(self.runs):
            raise HTTPException(404, "no such run")
        return self.runs[index]

    def warm(self) -> None:
        for run in self.runs:
            try:
                run.overview()
            except Exception:  # noqa: BLE001 - a page request will report the same error properly
                return

    # pages ------------------------------------------------------------------------------------
    def index(self, request: Request) -> Response:
        if len(self.runs) == 1:
            return RedirectResponse("/run/0", status_code=302)
        return self.page("index.html", request, overviews=[run.overview() for run in self.runs])

    def overview(self, request: Request) -> Response:
        run = self.run(request)
        return self.page("run.html", request, run=run, o=run.overview())

    def samples(self, request: Request) -> Response:
        run = self.run(request)
        where = SampleFilter.from_params(request.query_params)
        page = _page(request)
        return self.page("samples.html", request, run=run, where=where, q=urlencode(where.params()),
                         listing=run.samples_page(where, page))

    def sample(self, request: Request) -> Response:
        run = self.run(request)
        where = SampleFilter.from_params(request.query_params)
        sample = run.sample(request.query_params.get("id", ""), where)
        if sample is None:
            raise HTTPException(404, "no such sample")
        return self.page("sample.html", request, run=run, s=sample, where=where, q=urlencode(where.params()),
                         decisions=DECISIONS)

    async def review(self, request: Request) -> Response:
        run = self.run(request)
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self.csrf):
            raise HTTPException(403, "stale or foreign form (reload the page)")
        decision, sample_id = str(form.get("decision", "")), str(form.get("id", ""))
        where = SampleFilter.from_params(form)
        current = await run_in_threadpool(run.sample, sample_id, where)
        if current is None:
            raise HTTPException(404, "no such sample")
        edited = {}
        if decision == "edit":
            edited = {"reasoning": _text(form.get("reasoning")), "summary": _text(form.get("summary"))}
        try:
            await run_in_threadpool(append_review, run.path, sample_id, decision, note=str(form.get("note", "")),
                                    reviewer=self.reviewer, **edited)
        except CotforgeError as err:
            raise HTTPException(400, str(err)) from None
        # On to the next sample of the list being reviewed (the same one at the end of the list).
        target = current["next"] if form.get("advance") and current["next"] else sample_id
        query = urlencode({"id": target, **where.params()})
        return RedirectResponse(f"/run/{run.index}/sample?{query}", status_code=303)

    def prompts(self, request: Request) -> Response:
        run = self.run(request)
        params = request.query_params
        sort, descending = params.get("sort", "pass_rate"), params.get("dir", "asc") == "desc"
        never = params.get("never") == "1"
        return self.page("prompts.html", request, run=run, sort=sort, descending=descending, never=never,
                         listing=run.prompts_page(sort, descending, never, _page(request)))

    def sql(self, request: Request) -> Response:
        run = self.run(request)
        text = request.query_params.get("q", "").strip()
        result, error = None, None
        if text:
            try:
                result = run.sql(text)
            except CotforgeError as err:
                error = str(err)
        return self.page("sql.html", request, run=run, text=text, result=result, error=error)

    def compare(self, request: Request) -> Response:
        if len(self.runs) < 2:
            raise HTTPException(404, "give two runs: cotforge view RUN_A RUN_B")
        params = request.query_params
        left, right = (self.runs[_index(params.get(k, d), len(self.runs))] for k, d in (("a", "0"), ("b", "1")))
        return self.page("compare.html", request, left=left, right=right,
                         diff=compare(left, right, _page(request)))

    # plumbing ---------------------------------------------------------------------------------
    def asgi(self, allowed_hosts: list[str] | None = None) -> Starlette:
        routes = [
            Route("/", self.index), Route("/run/{run:int}", self.overview),
            Route("/run/{run:int}/samples", self.samples), Route("/run/{run:int}/sample", self.sample),
            Route("/run/{run:int}/review", self.review, methods=["POST"]),
            Route("/run/{run:int}/prompts", self.prompts), Route("/run/{run:int}/sql", self.sql),
            Route("/compare", self.compare), Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["*"])]
        app = Starlette(routes=routes, middleware=middleware,
                        exception_handlers={HTTPException: self.error, CotforgeError: self.error})
        return _Guard(app, self.token)

    async def error(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        return self.page("error.html", request, status_code=status, status=status,
                         message=getattr(exc, "detail", None) or str(exc))


class _Guard:
    """ASGI wrapper: security headers on every response; with a token, no request without it
    (given once as ?token=..., then kept in an HttpOnly SameSite cookie)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token:
            request = Request(scope)
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given, self.token):
                response = RedirectResponse(scope["path"], status_code=302)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return await response(scope, receive, send)
            if not hmac.compare_digest(request.cookies.get(TOKEN_COOKIE, ""), self.token):
                response = PlainTextResponse("cotforge view: open the URL with ?token=... that the server printed",
                                             status_code=401)
                return await self._secure(response)(scope, receive, send)
        return await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)
        return wrapped

    def _secure(self, response: Response) -> Response:
        response.headers["content-security-policy"] = CSP
        return response


def _page(request: Request) -> int:
    try:
        return max(0, int(request.query_params.get("page", "0")))
    except ValueError:
        return 0


def _index(value: str, count: int) -> int:
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < count:
        raise HTTPException(404, "no such run")
    return index


def _text(value) -> str | None:
    return None if value is None else str(value).replace("\r\n", "\n")


def serve(runs: list[Path], host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          reviewer: str | None = None) -> None:
    """Run the server until interrupted. Off loopback a token is required (made up when not given)."""
    import uvicorn

    local = host in ("127.0.0.1", "localhost", "::1")
    if not local and not token:
        token = secrets.token_urlsafe(18)
    view = ViewApp(runs, token=token, reviewer=reviewer)
    for run in view.runs:  # as `query` does: say so before the page does
        for note in run.notes():
            print(f"cotforge view: note: {run.path}: {note}", file=sys.stderr, flush=True)
    app = view.asgi(allowed_hosts=LOCAL_HOSTS if local else None)
    # The overview's one full scan (rejection reasons) starts now, while the browser is being opened.
    threading.Thread(target=view.warm, daemon=True).start()
    shown = "127.0.0.1" if local else host
    print(f"cotforge view: http://{shown}:{port}/" + (f"?token={token}" if token else "") + "  (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
