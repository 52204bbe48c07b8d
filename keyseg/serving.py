"""The `keyseg serve` web app: a Gradio page for people and a JSON endpoint for scripts.

Both call one `Segmenter` (keyseg.evaluation.inference), which runs one request at a time,
so concurrent requests never share a forward pass or see each other's results.

    GET  /api/health               {"status": "ok", "model": ..., "device": ...}
    POST /api/segment              JSON {"image": base64 bytes of a JPEG/PNG, "query": str}
                                   or a multipart form with fields `image` (file) and `query`
        200 {"answer", "keyword", "mask_rle": {"size", "counts"} (COCO RLE), "mask_png": base64,
             "foreground_pixels", "width", "height", "seconds"}
        400 a missing or empty query, a bad body; 413 an upload over the size limit;
        415 bytes that are not an image we read (or one over the pixel bound)
    GET  /                         the Gradio page: upload, query, examples, and the result

Uploads are bounded twice: by their size in bytes (`max_upload_bytes`, checked before the
body is read when the client says its length) and by their pixels (keyseg.images, from
the header, before decoding).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from keyseg.evaluation.inference import Segmenter, Segmentation

MAX_QUERY_CHARS = 1000


@dataclass
class AppSettings:
    model_name: str
    device: str
    max_upload_bytes: int = 10 * 1024 * 1024
    examples: list[tuple[Path, str]] = field(default_factory=list)  # (image, query) shown under the form


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def decode_upload(data: bytes, settings: AppSettings) -> np.ndarray:
    """RGB uint8 from uploaded bytes, or RequestError with the reason."""
    from keyseg.data.transforms import decode_rgb

    if not data:
        raise RequestError(400, "the image is empty")
    if len(data) > settings.max_upload_bytes:
        raise RequestError(413, f"the image is {len(data)} bytes; the limit is {settings.max_upload_bytes}")
    try:
        return decode_rgb(data)
    except ValueError as error:  # not an image, or over the pixel bound
        raise RequestError(415, f"not an image this server reads: {error}") from None


def checked_query(query) -> str:
    if not isinstance(query, str) or not query.strip():
        raise RequestError(400, "give a non-empty query")
    if len(query) > MAX_QUERY_CHARS:
        raise RequestError(400, f"the query is longer than {MAX_QUERY_CHARS} characters")
    return query.strip()


def segmentation_json(segmentation: Segmentation) -> dict:
    from keyseg.masks.coco import mask_to_rle
    from keyseg.masks.png import encode_png

    mask = segmentation.mask
    return {"answer": segmentation.answer, "keyword": segmentation.keyword, "mask_rle": mask_to_rle(mask),
            "mask_png": base64.b64encode(encode_png(mask.astype(np.uint8) * 255)).decode("ascii"),
            "foreground_pixels": int(mask.sum()), "width": int(mask.shape[1]), "height": int(mask.shape[0]),
            "seconds": round(segmentation.seconds, 3)}


def build_app(segmenter: Segmenter, settings: AppSettings):
    """The FastAPI app: the JSON endpoints, with the Gradio page mounted at /."""
    import gradio as gr

    app = FastAPI(title="keyseg serve")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/api/health")
    def health():
        return {"status": "ok", "model": settings.model_name, "device": settings.device}

    @app.post("/api/segment")
    async def segment(request: Request):
        declared = request.headers.get("content-length")
        # Room for the form or base64 around the image; the decoded image is checked again.
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes * 4 // 3 + 65536:
            return error(413, f"the request is {declared} bytes; images are limited to "
                              f"{settings.max_upload_bytes} bytes")
        try:
            data, query = await _read_request(request)
            rgb = decode_upload(data, settings)
            query = checked_query(query)
            segmentation = await run_in_threadpool(segmenter, rgb, query)
        except RequestError as problem:
            return error(problem.status, problem.message)
        except ValueError as problem:  # an image the model cannot take (a sliver)
            return error(415, str(problem))
        return segmentation_json(segmentation)

    async def _read_request(request: Request) -> tuple[bytes, object]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise RequestError(400, "the form needs an `image` file field")
            return await upload.read(settings.max_upload_bytes + 1), form.get("query")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "send JSON {\"image\": base64, \"query\": text} or a multipart form") from None
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise RequestError(400, "the JSON body needs `image` (base64 bytes of a JPEG or PNG) and `query`")
        try:
            data = base64.b64decode(body["image"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "`image` is not valid base64") from None
        return data, body.get("query")

    return gr.mount_gradio_app(app, build_page(segmenter, settings), path="/",
                               max_file_size=settings.max_upload_bytes)


def build_page(segmenter: Segmenter, settings: AppSettings):
    """The Gradio page: upload and query in, overlay, mask, answer, keyword and time out."""
    import gradio as gr

    from keyseg.masks.overlay import prediction_overlay

    def answer(image_path, query):
        # The upload is read from its file as every keyseg stage reads images (OpenCV, the
        # pixel bound from the header), so the page and the JSON endpoint give one answer.
        if image_path is None:
            raise gr.Error("upload an image first")
        try:
            query = checked_query(query)
            rgb = decode_upload(Path(image_path).read_bytes(), settings)
            result = segmenter(rgb, query)
        except RequestError as problem:
            raise gr.Error(problem.message) from None
        except (OSError, ValueError) as problem:
            raise gr.Error(str(problem)) from None
        overlay = prediction_overlay(rgb, result.mask, query, result.answer, result.keyword)
        return (overlay, result.mask.astype(np.uint8) * 255, result.answer, result.keyword or "(none)",
                f"{result.seconds:.2f} s")

    with gr.Blocks(title="keyseg") as page:
        gr.Markdown(f"## keyseg: keyword-conditioned segmentation\nModel `{settings.model_name}` on "
                    f"{settings.device}. Upload an image, ask for something in it.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image", elem_id="image", sources=["upload"])
                query = gr.Textbox(label="Query", elem_id="query", placeholder="e.g. the red square on the left")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column():
                # PNG: Gradio's default (WebP) is lossy, and a mask must come back exactly.
                overlay = gr.Image(label="Overlay", elem_id="overlay", interactive=False, format="png")
                mask = gr.Image(label="Mask", elem_id="mask", interactive=False, format="png")
                with gr.Row():
                    answer_box = gr.Textbox(label="Answer", elem_id="answer", interactive=False)
                    keyword_box = gr.Textbox(label="Keyword", elem_id="keyword", interactive=False)
                    timing = gr.Textbox(label="Time", elem_id="time", interactive=False)
        if settings.examples:
            gr.Examples([[str(path), text] for path, text in settings.examples], inputs=[image, query])
        outputs = [overlay, mask, answer_box, keyword_box, timing]
        button.click(answer, inputs=[image, query], outputs=outputs)
        query.submit(answer, inputs=[image, query], outputs=outputs)
    return page
