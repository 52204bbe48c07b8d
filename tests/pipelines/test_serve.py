"""`keyseg serve` as users meet it: a real server process, its JSON endpoint under
concurrent requests, its refusals, and its page in Debian's headless Chromium."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyseg.demo.report import headless_chromium, segment_in_page, wait_for_server
from keyseg.errors import DataError
from tiny_export import write_tiny_export

ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD_MB = 0.25

pytestmark = pytest.mark.slow


def jpeg(width, height, seed) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from keyseg.data.conversation import template_texts

    root = tmp_path_factory.mktemp("serve")
    model = write_tiny_export(root / "model", [*template_texts(), "the red square"], [])
    example = root / "example.jpg"
    example.write_bytes(jpeg(96, 64, 99))
    port = free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--model", str(model), "--port", str(port),
                                "--device", "cpu", "--max-upload-mb", str(MAX_UPLOAD_MB),
                                "--example", f"{example}::the red square"],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_server(url, process)
        except DataError as error:
            pytest.fail(f"{error}: {(root / 'server.log').read_text()[-3000:]}")
        yield {"url": url, "port": port, "root": root, "log": root / "server.log"}
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def post(url, body: bytes, content_type="application/json"):
    request = urllib.request.Request(f"{url}/api/segment", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def segment(url, image: bytes, query: str):
    return post(url, json.dumps({"image": base64.b64encode(image).decode(), "query": query}).encode())


def test_concurrent_requests_each_get_their_own_answer(server):
    from pycocotools import mask as coco_mask

    requests = [(jpeg(64 + 8 * n, 48 + 4 * n, n), ["the red square", "what is here?", "the square"][n % 3])
                for n in range(6)]
    alone = [segment(server["url"], image, query) for image, query in requests]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda pair: segment(server["url"], *pair), requests * 2))
    for n, (status, result) in enumerate(together):
        assert status == 200, result
        expected = alone[n % len(requests)][1]
        assert (result["width"], result["height"]) == (64 + 8 * (n % 6), 48 + 4 * (n % 6))
        assert {key: result[key] for key in ("answer", "keyword", "mask_rle", "foreground_pixels")} == \
            {key: expected[key] for key in ("answer", "keyword", "mask_rle", "foreground_pixels")}
        decoded = coco_mask.decode({"size": result["mask_rle"]["size"],
                                    "counts": result["mask_rle"]["counts"].encode()})
        png = np.array(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))
        assert np.array_equal(decoded.astype(bool), png > 0) and decoded.sum() == result["foreground_pixels"]


def test_a_multipart_upload_works_like_json(server):
    image = jpeg(80, 60, 7)
    boundary = "keyseg-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nthe red square\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    status, result = post(server["url"], body, f"multipart/form-data; boundary={boundary}")
    assert status == 200, result
    assert result == {**segment(server["url"], image, "the red square")[1], "seconds": result["seconds"]}


def test_bad_uploads_are_refused_with_a_reason(server):
    url = server["url"]
    too_big = os.urandom(int(MAX_UPLOAD_MB * 1024 * 1024) + 1000)
    status, result = segment(url, too_big, "x")
    assert status == 413 and "limit" in result["error"]
    status, result = segment(url, b"%PDF-1.4 not an image", "the red square")
    assert status == 415 and "not an image" in result["error"]
    status, result = segment(url, jpeg(32, 32, 1), "   ")
    assert status == 400 and "query" in result["error"]
    status, result = post(url, b"{not json")
    assert status == 400 and "JSON" in result["error"]
    status, result = post(url, json.dumps({"image": "***", "query": "x"}).encode())
    assert status == 400 and "base64" in result["error"]


def test_it_listens_on_the_loopback_address_only(server):
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    listening = [line.split()[1] for line in lines if line.split()[3] == "0A"]  # state LISTEN
    ours = [address for address in listening if int(address.split(":")[1], 16) == server["port"]]
    assert ours == ["0100007F:" + f"{server['port']:04X}"]  # 127.0.0.1
    assert f"http://127.0.0.1:{server['port']}/" in server["log"].read_text()


def test_the_page_segments_an_uploaded_image(server):
    from selenium.webdriver.common.by import By

    picture = server["root"] / "upload.jpg"
    picture.write_bytes(jpeg(120, 90, 3))
    driver = headless_chromium()
    try:
        segment_in_page(driver, server["url"], picture, "the red square")
        assert "the red square" in driver.page_source  # the example is listed
        answer = driver.find_element(By.CSS_SELECTOR, "#answer textarea").get_attribute("value")
        expected = segment(server["url"], picture.read_bytes(), "the red square")[1]
        assert answer == expected["answer"]
        assert driver.find_element(By.CSS_SELECTOR, "#keyword textarea").get_attribute("value") == \
            (expected["keyword"] or "(none)")
        assert driver.find_element(By.CSS_SELECTOR, "#time textarea").get_attribute("value").endswith(" s")
        # The mask the page shows is the endpoint's, pixel for pixel (the upload is not re-encoded).
        with urllib.request.urlopen(driver.find_element(By.CSS_SELECTOR, "#mask img").get_attribute("src")) as shown:
            page_mask = np.array(Image.open(io.BytesIO(shown.read())).convert("L")) > 127
        endpoint_mask = np.array(Image.open(io.BytesIO(base64.b64decode(expected["mask_png"])))) > 0
        assert np.array_equal(page_mask, endpoint_mask)
    finally:
        driver.quit()
