"""Which files a request may open: only those the visitor uploaded to this server. One function decides.

The page uploads bytes to Gradio's upload folder and then names them in a Gradio ``FileData`` payload. A
stranger calling the API can name anything instead: a server path (tagged or not), a relative path, a symlink
inside the upload folder, or a URL that the server would fetch for them. ``uploaded_path`` accepts only a
tagged payload whose real path lies inside the upload folder; everything else gets the same sentence, decided
from the string alone before the disk is touched, so a refusal says nothing about which files exist.

``UploadGuard`` applies that same function to every file payload of every API call before Gradio sees it,
so Gradio never fetches a URL or copies a server file on a visitor's behalf. The app fetches no URL for any
file or image input: the page always uploads bytes. After each upload it runs ``after_upload`` (the app passes
``resnet.ui.disk``'s budget, which needs ``upload_root`` from here: passed in, not imported, to keep no circle).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from ..errors import NotUploaded
from ..i18n import lang_from_header, t

log = logging.getLogger("resnet.ui")
MAX_JSON_BODY = 1 << 20  # an API call's JSON names files; it never carries them


def not_uploaded(lang: str = "en") -> NotUploaded:
    return NotUploaded(t("upload.refused", lang))


def upload_root() -> str:
    """Gradio's upload folder (``GRADIO_TEMP_DIR``), where the page's uploads and the examples' copies live."""
    from gradio.utils import get_upload_folder
    return os.path.normpath(os.path.abspath(get_upload_folder()))


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def uploaded_path(value, lang: str = "en") -> Path | None:
    """The real path of a file the visitor uploaded, None for an empty input; anything else is refused.

    Accepted: a dict tagged ``meta._type == "gradio.FileData"`` whose ``path`` is absolute, has no ``..`` or
    URL scheme, lies inside the upload folder, and has no symlink on the way there. Refused, with one sentence
    (``NotUploaded``): untagged dicts, plain strings, relative paths, URLs, files outside the folder, links.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise not_uploaded(lang)
    meta, path = value.get("meta"), value.get("path")
    if not isinstance(meta, dict) or meta.get("_type") != "gradio.FileData" or not isinstance(path, str):
        raise not_uploaded(lang)
    if not path:
        return None
    root = upload_root()
    if ("://" in path or "\x00" in path or not os.path.isabs(path) or os.path.normpath(path) != path
            or not _inside(path, root)):
        raise not_uploaded(lang)  # decided from the string alone: nothing outside the folder is looked at
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.relpath(real, real_root) != os.path.relpath(path, root) or not os.path.isfile(real):
        raise not_uploaded(lang)  # a link inside the upload folder, or a name that is not a file there
    return Path(real)


def file_payloads(data):
    """Every dict in a request's ``data`` that names a file (has a ``path``), at any depth."""
    if isinstance(data, dict):
        if "path" in data:
            yield data
        else:
            for v in data.values():
                yield from file_payloads(v)
    elif isinstance(data, list):
        for v in data:
            yield from file_payloads(v)


def refusal(lang: str, message: str, name: str = "file") -> tuple[int, dict]:
    """A 422 answer in the shape Gradio uses for its validators, so ``gradio_client`` raises it as a
    ``ValidationError`` with our sentence, and the page shows it."""
    return 422, {"detail": [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": name}],
                 "error": message}


def file_slots(demo, path: str, payload: dict) -> set[int]:
    """Positions in the call's ``data`` that belong to file or image inputs (whatever the caller sent there)."""
    fn = None
    for marker in ("/call/", "/run/", "/api/"):
        if marker in path:
            name = path.rsplit(marker, 1)[1].strip("/").split("/")[0]
            fn = next((f for f in demo.fns.values() if f.api_name == name), None)
    if fn is None and isinstance(payload.get("fn_index"), int):
        fn = demo.fns.get(payload["fn_index"])
    if fn is None:
        return set()
    inputs = [block for block in fn.inputs if not getattr(block, "stateful", False)]
    return {i for i, block in enumerate(inputs)
            if "path" in getattr(getattr(block, "data_model", None), "model_fields", {})}


class UploadGuard:
    """ASGI middleware: refuse any JSON API call that names a file the visitor did not upload (see above):
    every value in a file or image input's place, and every file-like dict anywhere in the data."""

    def __init__(self, app, demo=None, after_upload=None):
        self.app = app
        self.demo = demo
        self.after_upload = after_upload  # called in a thread after each upload (the disk budget)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if "json" not in headers.get("content-type", ""):
            await self.app(scope, receive, send)  # uploads (multipart) go to Gradio's size-limited route
            if scope.get("path", "").endswith("/upload") and self.after_upload is not None:
                await asyncio.to_thread(self.after_upload)  # uploads and runs stay in budget
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BODY:
                return await _answer(send, 413, {"error": "Request too large."})
        lang = lang_from_header(headers.get("accept-language"))
        problem = self.check(body, lang, scope.get("path", ""))
        if problem is not None:
            return await _answer(send, *problem)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def check(self, body: bytes, lang: str, path: str):
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return None  # not ours to judge: Gradio answers malformed JSON itself
        data = payload.get("data") if isinstance(payload, dict) else None
        slots = file_slots(self.demo, path, payload) if self.demo is not None and isinstance(data, list) else set()
        values = [data[i] for i in sorted(slots) if i < len(data)] + list(file_payloads(data))
        for value in values:
            try:
                uploaded_path(value, lang)
            except NotUploaded as e:
                name = value.get("path") if isinstance(value, dict) else value
                log.warning("refused a file payload that was not uploaded: %r", str(name)[:200])
                return refusal(lang, str(e))
        return None


async def _answer(send, status: int, content: dict) -> None:
    body = json.dumps(content, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
