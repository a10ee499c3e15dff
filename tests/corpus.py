"""The hostile test corpus: what phones, students and strangers upload, made at test time into tmp folders.

Nothing binary is committed: every file is written here from a real photo that ships with gradio, from
Pillow, or byte by byte (a PNG whose header claims 20000×20000 but whose data compresses to ~50 KB; zip
entries with ``..``, absolute names and symlink bits, which ``zipfile`` itself would never write).

    images(dir)        -> {name: Path}    every image case
    BROKEN             {name: phrase}     cases that must be refused, and a phrase their message contains
    ODD                names of valid-but-odd cases that must classify
    dataset_zip(path, classes=…)          a small valid ImageFolder zip (one colour/shape family per class)
    hostile_zips(dir)  -> {name: Path}    the hostile dataset zips; MARKER names the files they try to plant
"""
from __future__ import annotations

import io
import random
import stat
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------- images


def photo(name: str = "lion.jpg") -> Image.Image:
    import gradio.media
    return Image.open(gradio.media.get_image(name)).convert("RGB")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows) -> bytes:
    """A PNG written byte by byte: ``rows`` yields each scanline's bytes (without the filter byte)."""
    z = zlib.compressobj(9)
    body = b"".join(z.compress(b"\x00" + row) for row in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit ``side``×``side`` PNG of zeros: ~50 KB on disk, ``side``² bytes once Pillow decodes it."""
    row = bytes((side + 7) // 8)
    return raw_png(side, side, 1, 0, (row for _ in range(side)))


def rgb16_png(img: Image.Image) -> bytes:
    """48-bit RGB (16 bits per channel, big-endian), as scanners and photo editors write."""
    import numpy as np
    a = np.asarray(img.convert("RGB"), dtype=">u2") * 257
    return raw_png(img.width, img.height, 16, 2, (r.tobytes() for r in a))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg(img: Image.Image) -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 ("rotate 90° clockwise to display"), as phones write."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, "JPEG", quality=95, exif=exif)


def animated_gif(frames: list[Image.Image]) -> bytes:
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency(img: Image.Image) -> bytes:
    p = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return _save(p, "PNG", transparency=0)


def corrupt_png(img: Image.Image) -> bytes:
    """A PNG whose compressed pixel data has been scrambled (a bad download, a flaky card)."""
    data = bytearray(_save(img, "PNG"))
    start = data.find(b"IDAT") + 200
    for i in range(start, start + 300):
        data[i] ^= 0x5A
    return bytes(data)


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


# name → (file bytes maker, phrase the refusal must contain)
BROKEN = {
    "empty.jpg": "empty",
    "text.jpg": "not an image",
    "page.svg": "not an image",
    "archive.jpg": "not an image",
    "truncated.jpg": "damaged or truncated",
    "truncated.png": "damaged or truncated",
    "corrupt.png": "damaged or truncated",
    "bomb_20000x20000.png": "too large",
    "big_10000x10000.png": "over the limit",
    "strip_20000x2.png": "too long and thin",
}
ODD = ["tiny_1x1.png", "gray.jpg", "gray16.png", "rgb16.png", "cmyk.jpg", "palette_transparent.png",
       "rgba.png", "animated.gif", "exif_rotated.jpg", "webp.webp", "bmp.bmp", "mpo.jpg", "panorama_8x1.jpg"]


def image_bytes() -> dict[str, bytes]:
    """Every image case, as bytes."""
    lion = photo("lion.jpg").resize((320, 240))
    tower = photo("tower.jpg").resize((240, 320))
    good_jpeg = _save(lion, "JPEG", quality=90)
    good_png = _save(lion, "PNG")
    gray16 = Image.fromarray(
        (__import__("numpy").asarray(lion.convert("L"), dtype="uint16") * 257), mode="I;16")
    out = {
        "empty.jpg": b"",
        "text.jpg": b"Dear teacher, this is my homework, not a picture.\n" * 20,
        "page.svg": b"<svg xmlns='http://www.w3.org/2000/svg' width='100' height='100'>"
                    b"<circle cx='50' cy='50' r='40' fill='red'/></svg>",
        "archive.jpg": zip_bytes({"cat.jpg": good_jpeg}),
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 3],
        "truncated.png": good_png[: len(good_png) // 2],
        "corrupt.png": corrupt_png(lion),
        "bomb_20000x20000.png": bomb_png(20_000),
        "big_10000x10000.png": bomb_png(10_000),
        "strip_20000x2.png": _save(Image.new("RGB", (20_000, 2), "red"), "PNG"),
        "tiny_1x1.png": _save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "gray.jpg": _save(lion.convert("L"), "JPEG"),
        "gray16.png": _save(gray16, "PNG"),
        "rgb16.png": rgb16_png(lion),
        "cmyk.jpg": _save(lion.convert("CMYK"), "JPEG"),
        "palette_transparent.png": palette_with_transparency(lion),
        "rgba.png": _save(lion.convert("RGBA"), "PNG"),
        "animated.gif": animated_gif([lion, tower.resize(lion.size), Image.new("RGB", lion.size, "blue")]),
        "exif_rotated.jpg": exif_rotated_jpeg(tower),
        "webp.webp": _save(lion, "WEBP"),
        "bmp.bmp": _save(lion, "BMP"),
        "mpo.jpg": _save(lion, "MPO", save_all=True, append_images=[tower.resize(lion.size)]),
        "panorama_8x1.jpg": _save(photo("tower.jpg").resize((1600, 200)), "JPEG"),
    }
    assert set(out) == set(BROKEN) | set(ODD)
    return out


def images(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in image_bytes().items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    return paths


# ------------------------------------------------------------------------------------------- datasets

PALETTE = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 190, 30), (150, 50, 180), (30, 180, 190)]


def class_image(k: int, i: int, size: int = 48) -> bytes:
    """Image ``i`` of class ``k``: a coloured disc or bar on noise, different per class, varied per image."""
    rng = random.Random(k * 1000 + i)
    img = Image.effect_noise((size, size), 40).convert("RGB")
    d = ImageDraw.Draw(img)
    c = PALETTE[k % len(PALETTE)]
    x, y, r = rng.randint(10, size - 10), rng.randint(10, size - 10), rng.randint(6, 12)
    if k % 2:
        d.rectangle([x - r, 0, x + r, size], fill=c)
    else:
        d.ellipse([x - r, y - r, x + r, y + r], fill=c)
    return _save(img, "PNG")


def dataset_zip(path: Path, classes=("cats", "dogs"), per_class: int = 8, *, offset: int = 0,
                prefix: str = "") -> Path:
    """A small valid ImageFolder zip: ``prefix/class/NNN.png``. ``offset`` picks another colour family."""
    entries = {}
    for k, cls in enumerate(classes):
        for i in range(per_class):
            entries[f"{prefix}{cls}/{i:03d}.png"] = class_image(k + offset, i)
    path.write_bytes(zip_bytes(entries))
    return path


def _raw_zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    """Entries written with names and mode bits exactly as given (``zipfile`` strips neither on write)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.create_system = 3  # unix, so that external_attr's high bits are file modes
                info.external_attr = mode << 16
            z.writestr(info, data)
    return buf.getvalue()


def bomb_zip(path: Path, megabytes: int) -> Path:
    """Two classes of real images plus one entry of ``megabytes`` MB of zeros (~1000:1 compression)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, cls in enumerate(("cats", "dogs")):
            for i in range(4):
                z.writestr(f"{cls}/{i}.png", class_image(k, i))
        with z.open("cats/huge.png", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                f.write(block)
    return path


MARKER = "resnet-lab-robustness-marker"


def hostile_zips(directory: Path, *, abs_target: Path) -> dict[str, Path]:
    """The hostile dataset zips, by name. ``abs_target`` is the absolute path one of them tries to write."""
    directory.mkdir(parents=True, exist_ok=True)
    ok = {f"{c}/{i}.png": class_image(k, i) for k, c in enumerate(("cats", "dogs")) for i in range(4)}
    ok_entries = [(n, d, None) for n, d in ok.items()]
    tiny = _save(Image.new("RGB", (8, 8), "gray"), "PNG")
    cases: dict[str, bytes] = {
        "traversal.zip": _raw_zip(ok_entries + [(f"../../{MARKER}.png", ok["cats/0.png"], None),
                                                (f"cats/../../../{MARKER}-2.png", ok["cats/1.png"], None)]),
        "absolute.zip": _raw_zip(ok_entries + [(str(abs_target), ok["cats/0.png"], None)]),
        "symlink.zip": _raw_zip(ok_entries + [("cats/passwd.png", b"/etc/passwd", stat.S_IFLNK | 0o777),
                                              ("dogs/up", b"../../..", stat.S_IFLNK | 0o777)]),
        "many_files.zip": zip_bytes({f"c{i % 2}/{i:05d}.png": tiny for i in range(10_000)}),
        "deep.zip": zip_bytes({"d/" * 300 + n: d for n, d in ok.items()}),
        "one_class.zip": zip_bytes({f"cats/{i}.png": class_image(0, i) for i in range(6)}),
        "empty.zip": zip_bytes({}),
        "no_images.zip": zip_bytes({"cats/readme.txt": b"hello", "dogs/notes.md": b"# notes",
                                    "dogs/fake.jpg": b"not really a jpeg"}),
        "not_a_zip.zip": b"This is a text file renamed to .zip\n" * 10,
    }
    paths = {}
    for name, data in cases.items():
        (directory / name).write_bytes(data)
        paths[name] = directory / name
    return paths
