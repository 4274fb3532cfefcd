"""Renders an HTML report to a full-page PNG with headless Chromium, to look at what a reader sees.

    python scripts/screenshot_report.py reports/sweeps/demo/report/report.html /tmp/report.png --width 1200

Chromium (Debian: ``apt-get install chromium``) draws the page in a window ``--width`` pixels wide
and ``--max-height`` tall, and the blank space below the page is cut off, so the PNG is the whole
page as long as it fits in ``--max-height`` (a page cut there is reported, with exit code 1). The
PNG is written to a temporary name and renamed. Exit codes: 0 written, 1 page taller than
``--max-height``, 2 no Chromium or a rendering error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MARGIN = 24  # blank pixels kept under the page's last drawn row


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM`` if set, else the first of ``BROWSERS`` on the PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or None
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: str | os.PathLike, png: str | os.PathLike, *, width: int = 1200, max_height: int = 16000,
               chromium: str | None = None, timeout: float = 120.0) -> tuple[int, int, bool]:
    """Renders ``html`` at ``width`` pixels and writes the page, blank tail cut, to ``png``.

    Args:
        html: the HTML file.
        png: the PNG to write.
        width: the window width in CSS pixels (device scale factor 1).
        max_height: the window height: the longest page captured whole.
        chromium: the browser executable (default: ``find_chromium()``).
        timeout: seconds allowed for Chromium.

    Returns:
        (width, height) of the PNG, and whether the page reached the bottom of the window (cut).

    Raises:
        FileNotFoundError: the HTML file or Chromium is missing.
        RuntimeError: Chromium failed or wrote no image.
    """
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"{html} does not exist.")
    browser = chromium or find_chromium()
    if browser is None:
        raise FileNotFoundError("No Chromium found (looked for $CHROMIUM and " + ", ".join(BROWSERS)
                                + "). On Debian or Ubuntu: apt-get install chromium.")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshot-") as scratch:
        raw = Path(scratch) / "page.png"
        command = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   # Root (containers, CI) cannot use Chromium's sandbox; the page is a local file.
                   "--no-sandbox", f"--user-data-dir={scratch}/profile", "--force-device-scale-factor=1",
                   f"--window-size={width},{max_height}", f"--screenshot={raw}", html.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not raw.exists():
            raise RuntimeError(f"Chromium failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        image = Image.open(raw).convert("RGB")
        pixels = np.asarray(image)
        background = pixels[-1, 0]
        drawn = np.flatnonzero((pixels != background).any(axis=(1, 2)))
        bottom = int(drawn[-1]) + 1 if drawn.size else 1
        cut = bottom >= pixels.shape[0] - 1
        cropped = image.crop((0, 0, image.width, min(pixels.shape[0], bottom + MARGIN)))
        fd, tmp = tempfile.mkstemp(dir=png.parent, prefix=f".tmp-{png.stem}-", suffix=".png")
        os.close(fd)
        try:
            cropped.save(tmp)
            os.replace(tmp, png)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return cropped.width, cropped.height, cut


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="the report's HTML file")
    parser.add_argument("png", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1200, help="window width in pixels (default 1200)")
    parser.add_argument("--max-height", type=int, default=16000, help="longest page captured (default 16000)")
    parser.add_argument("--chromium", help="the browser executable (default: $CHROMIUM, else chromium on the PATH)")
    args = parser.parse_args(argv)
    if args.width < 200 or args.max_height < 200:
        parser.error(f"--width and --max-height must be at least 200 pixels, received {args.width} and "
                     f"{args.max_height}.")
    try:
        width, height, cut = screenshot(args.html, args.png, width=args.width, max_height=args.max_height,
                                        chromium=args.chromium)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.png}: {width} x {height} pixels")
    if cut:
        print(f"The page is taller than --max-height {args.max_height}: it was cut; pass a larger --max-height.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
