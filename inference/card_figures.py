"""The model card's figures (ROC, reliability diagram, confusion matrix) as small PNGs, drawn with
Pillow to keep plotting libraries out of the dependencies. Palette images: a few kilobytes each."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

SIDE = 320
MARGIN = 40
Point = tuple[float, float]


def _canvas(title: str, x_label: str, y_label: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A white square plot area with its frame, title and axis labels."""
    image = Image.new("RGB", (SIDE + 2 * MARGIN, SIDE + 2 * MARGIN), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([MARGIN, MARGIN, MARGIN + SIDE, MARGIN + SIDE], outline="black")
    draw.text((MARGIN, 12), title, fill="black")
    draw.text((MARGIN + SIDE // 2 - 50, SIDE + MARGIN + 14), x_label, fill="black")
    draw.text((4, MARGIN + SIDE // 2), y_label, fill="black")
    for tick in (0.0, 0.5, 1.0):
        x, y = _xy(tick, tick)
        draw.text((x - 6, SIDE + MARGIN + 2), f"{tick:g}", fill="black")
        draw.text((MARGIN - 22, y - 6), f"{tick:g}", fill="black")
    return image, draw


def _xy(x: float, y: float) -> Point:
    """Plot coordinates (0..1 each, y up) to pixels."""
    return MARGIN + x * SIDE, MARGIN + (1 - y) * SIDE


def _save(image: Image.Image, path: Path) -> None:
    image.quantize(colors=16).save(path, optimize=True)


def draw_roc(
    points: list[Point], auc: float, operating: Point, threshold: float, path: Path
) -> None:
    """ROC curve with the operating point (1 - specificity, sensitivity) marked."""
    image, draw = _canvas(f"ROC, validation AUC {auc:.4f}", "1 - specificity", "sens.")
    draw.line([_xy(0, 0), _xy(1, 1)], fill="grey")
    draw.line([_xy(*p) for p in points], fill="navy", width=2)
    x, y = _xy(*operating)
    draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline="red", width=2)
    draw.text((x + 8, y + 4), f"threshold {threshold:g}", fill="red")
    _save(image, path)


def draw_reliability(
    before: list[tuple[float, float, int]], after: list[tuple[float, float, int]], path: Path
) -> None:
    """Observed fraction against mean predicted probability per bin, before (grey) and after
    (blue) calibration; the diagonal is perfect calibration, dot area grows with the count (bins
    of a few images scatter far from it by chance)."""
    image, draw = _canvas("Reliability (grey: raw, blue: calibrated)", "predicted p", "observed")
    draw.line([_xy(0, 0), _xy(1, 1)], fill="grey")
    total = sum(n for _, _, n in after) or 1

    def series(table: list[tuple[float, float, int]], colour: str) -> None:
        for p, o, n in table:
            x, y = _xy(p, o)
            r = 2 + 10 * (n / total) ** 0.5
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=2)

    series(before, "darkgrey")
    series(after, "blue")
    _save(image, path)


def draw_confusion(confusion: dict[str, int], positive: str, negative: str, path: Path) -> None:
    """The 2 x 2 confusion matrix, rows the truth, columns the prediction; darker = more."""
    image = Image.new("RGB", (SIDE + 2 * MARGIN, SIDE + 2 * MARGIN), "white")
    draw = ImageDraw.Draw(image)
    cells = [
        [confusion["true_positive"], confusion["false_negative"]],
        [confusion["false_positive"], confusion["true_negative"]],
    ]
    largest = max(max(row) for row in cells) or 1

    def shade(n: int) -> tuple[int, int, int]:
        return int(255 - 180 * n / largest), int(255 - 150 * n / largest), 255

    half = SIDE // 2
    draw.text((MARGIN, 12), "Confusion matrix (rows: truth, columns: predicted)", fill="black")
    for row, truth in enumerate((positive, negative)):
        draw.text((MARGIN + 4, MARGIN + row * half + 4), f"truly {truth}", fill="black")
        for column, predicted in enumerate((positive, negative)):
            left, top = MARGIN + column * half, MARGIN + row * half
            draw.text((left + half // 2 - 25, SIDE + MARGIN + 14), predicted[:12], fill="black")
            count = cells[row][column]
            draw.rectangle([left, top, left + half, top + half], fill=shade(count), outline="black")
            draw.text((left + half // 2 - 10, top + half // 2 - 6), str(count), fill="black")
    _save(image, path)
