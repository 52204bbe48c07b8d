"""The records of a `make demo` run and what is reported from them.

Each timed stage leaves `times/<stage>.json` (its wall time, only when it succeeded, so
make reruns a failed one); the summary gathers those with the scores before and after
training and the training figures; the README's pictures are picked from the run's
outputs deterministically (the first overlays, the gallery's best rows then its worst).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

from keyseg.errors import DataError

STAGE_ORDER = ("demo-data", "prepare", "mine-keywords", "shard", "verify", "evaluate-before", "train",
               "evaluate-after")
SPLITS = ("reasonseg:val", "reasonseg:test")
OVERLAY_WIDTH = 480
GALLERY_WIDTH = 900


def timed_call(command: list[str]) -> tuple[int, float]:
    """Run a command in the foreground: (its exit status, its wall time in seconds)."""
    started = time.perf_counter()
    status = subprocess.call(command)
    return status, round(time.perf_counter() - started, 2)


def time_record_path(times_dir: Path, stage: str) -> Path:
    return Path(times_dir) / f"{stage}.json"


def time_record(stage: str, seconds: float) -> dict:
    return {"stage": stage, "seconds": seconds}


def stage_times(times_dir: Path) -> dict[str, float]:
    """Seconds per recorded stage, in the demo's stage order (unknown stages last)."""
    found = {}
    for path in sorted(Path(times_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[record["stage"]] = record["seconds"]
    return {name: found[name] for name in STAGE_ORDER if name in found} | found


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _scores(metrics: dict | None, splits) -> dict:
    if metrics is None:
        return {}
    return {split: {"giou": metrics[split]["giou"], "ciou": metrics[split]["ciou"]} for split in splits
            if split in metrics}


def demo_summary(demo_dir: Path, splits=SPLITS) -> dict:
    """Stage times, gIoU/cIoU before and after training, keyword match, training figures, output folders."""
    demo = Path(demo_dir)
    before = _read_json(demo / "eval_before" / "metrics.json")
    after = _read_json(demo / "eval_after" / "metrics.json")
    keyword_match = None
    if after is not None:
        rates = {split: (after[split].get("keywords") or {}).get("match_rate") for split in after}
        keyword_match = {split: rate for split, rate in rates.items() if rate is not None} or None
    training = _read_json(demo / "train" / "train_summary.json") or {}
    return {"stages": stage_times(demo / "times"), "before": _scores(before, splits),
            "after": _scores(after, splits), "keyword_match": keyword_match,
            "training": {key: training.get(key) for key in ("steps", "samples_per_second", "data_wait_fraction",
                                                            "best_giou")},
            "outputs": {"data": str(demo / "data"), "prepared": str(demo / "prepared"),
                        "train": str(demo / "train"), "model": str(demo / "train" / "export"),
                        "gallery": str(demo / "eval_after" / "gallery" / "index.html")}}


def gallery_picks(gallery_dir: Path, rows: int) -> list[Path]:
    """`rows` pictures of an evaluation gallery: the `rows - 1` best, then the worst.

    Reads the gallery's `gallery.json`; a folder without one gives no pictures.
    """
    listing = _read_json(Path(gallery_dir) / "gallery.json")
    if listing is None:
        return []
    entries = listing["best"][:max(rows - 1, 0)] + listing["worst"][:1]
    return [Path(gallery_dir) / entry["image"] for entry in entries[:rows]]


def _stacked_png(paths: list[Path], width: int) -> bytes:
    """The images one above the other, each scaled to `width`, as a 256-colour PNG."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        images.append(rgb.resize((width, round(rgb.height * width / rgb.width)), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (width, sum(image.height for image in images)), "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    buffer = io.BytesIO()
    # 256 colours: a third of the bytes for the repository, no visible loss on these scenes.
    canvas.quantize(256).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def readme_pictures(demo_dir: Path, shards_dir: Path, gallery_rows: int = 3) -> dict[str, bytes]:
    """File name -> PNG bytes of the pictures the README shows: the first two overlays of
    `prepare --visualize`, gallery rows of the trained model, the shard statistics."""
    prepared = Path(demo_dir) / "prepared"
    # ReasonSeg's first: its polygons, ignore regions and outlines are what the caption shows.
    overlays = (sorted(prepared.glob("reasonseg/train/overlays/*.png"))
                or sorted(prepared.glob("*/train/overlays/*.png")))[:2]
    gallery = gallery_picks(Path(demo_dir) / "eval_after" / "gallery", gallery_rows)
    stats = Path(shards_dir) / "stats.png"
    missing = [name for name, found in (("prepare overlays", overlays), ("evaluation gallery", gallery),
                                        ("shard stats", stats.is_file())) if not found]
    if missing:
        raise DataError(demo_dir, f"run `make demo` first: no {', '.join(missing)} here or in {shards_dir}")
    return {"prepare_overlays.png": _stacked_png(overlays, OVERLAY_WIDTH),
            "gallery.png": _stacked_png(gallery, GALLERY_WIDTH),
            "shard_stats.png": stats.read_bytes()}


def showcase_query(demo_dir: Path) -> tuple[Path, str]:
    """(image, query) for the README's chat and serve screenshots: the ReasonSeg val phrase
    query the trained demo model segments best (its image in the demo data)."""
    rows = [json.loads(line) for line in (Path(demo_dir) / "eval_after" / "per_sample.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["split"] == "reasonseg:val" and not row["is_sentence"]]
    if not rows:
        raise DataError(demo_dir, "run `make demo` first: no ReasonSeg val phrase queries in eval_after/")
    best = max(rows, key=lambda row: row["iou"])
    name = best["id"].removeprefix("reasonseg-val-")
    return Path(demo_dir) / "data" / "reason_seg" / "ReasonSeg" / "val" / f"{name}.jpg", best["query"]


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's packages (make setup)


def headless_chromium(width: int = 1280, height: int = 1000):
    """A Selenium driver for Debian's Chromium, headless; nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).is_file():
        raise DataError(CHROMEDRIVER, "not installed: `make setup` installs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for_server(url: str, process, seconds: float = 300) -> None:
    """Return once `url`/api/health answers; DataError if `process` (a Popen) exits first
    or the time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DataError(url, f"keyseg serve exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise DataError(url, f"keyseg serve did not answer /api/health within {seconds:.0f} s")


def segment_in_page(driver, url: str, image: Path, query: str, seconds: float = 120) -> None:
    """In the `keyseg serve` page at `url`: upload `image`, type `query`, press Segment, and
    wait until the overlay and the answer are shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    wait = WebDriverWait(driver, seconds)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(Path(image).resolve()))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"))
    driver.find_element(By.CSS_SELECTOR, "#query textarea").send_keys(query)
    driver.find_element(By.CSS_SELECTOR, "#segment").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay img")
               and d.find_element(By.CSS_SELECTOR, "#answer textarea").get_attribute("value"))
