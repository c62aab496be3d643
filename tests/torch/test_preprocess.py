#!/usr/bin/python3
"""test_preprocess.py - `lsq preprocess` against PIL + torchvision (timm's eval transform).

For each case an image is written with PIL (JPEG, PNG in every colour type, WebP), run through
`$LSQ_BIN preprocess`, and compared with

    Image.open(f) [-> ImageOps.exif_transpose] -> convert('RGB') [-> convert('L') -> convert('RGB')]
    -> Resize(floor(size / crop_pct) or --resize, interp) -> CenterCrop(size) -> ToTensor
    -> Normalize(mean, std)

Tolerance, per value: |lsq - torch| <= 1/255/std[c] (one 8-bit level) everywhere, and at least
99.9% of the values exactly equal (|diff| <= 1e-6). The C code reproduces PIL's integer arithmetic,
so in practice every case is expected to be bit-exact; the level of slack is there for decoders
that could legitimately differ (a different libjpeg build).

Known, documented deviation: a 16-bit greyscale PNG. PIL opens it as mode 'I' and its convert('RGB')
clips every value above 255 to white; lsq keeps the high byte (as PIL does for 16-bit colour), so
the reference for that case is built from the high byte.

Environment: LSQ_BIN (the lsq binary), LSQ_TMP (a scratch directory). Prints "ok <name>" or
"not ok <name>: <reason>" per check; exits 1 if any check failed.
"""
import math
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

LSQ_BIN = os.environ.get("LSQ_BIN", "build/lsq")
TMP = os.environ.get("LSQ_TMP", "/tmp")
os.makedirs(TMP, exist_ok=True)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERP = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
          "nearest": T.InterpolationMode.NEAREST}
EXACT_FRACTION = 0.999

failures = 0
stats = {"values": 0, "exact": 0, "max_levels": 0.0}


def report(name, ok, reason=""):
    global failures
    if ok:
        print(f"ok {name}", flush=True)
    else:
        failures += 1
        print(f"not ok {name}: {reason}", flush=True)


def synthetic_rgb(w, h, seed):
    """A natural-looking test picture: gradients, hard edges, texture and noise (all 8-bit levels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / (7 + seed % 5)) * np.cos(y / 11.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * ((x // 13 + y // 17) % 2)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (h, w, 3))
    cy, cx = h / 2, w / 3
    disk = (x - cx) ** 2 + (y - cy) ** 2 < (min(w, h) / 4) ** 2
    img[disk] = [250, 30, 60]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def reference(path, size, resize, crop_pct, interp, mean, std, gray, exif):
    img = Image.open(path)
    if exif:
        img = ImageOps.exif_transpose(img)
    img = img.convert("RGB")
    if gray:
        img = img.convert("L").convert("RGB")
    return reference_from_rgb(img, size, resize, crop_pct, interp, mean, std)


def reference_from_rgb(img, size, resize, crop_pct, interp, mean, std):
    scale = resize if resize else math.floor(size / crop_pct)
    tf = T.Compose([T.Resize(scale, interpolation=INTERP[interp]), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize(mean, std)])
    return tf(img).unsqueeze(0).numpy()


def run_lsq(path, out, size=224, resize=None, crop_pct=None, interp=None, mean=None, std=None, gray=False,
            exif=True, extra=()):
    cmd = [LSQ_BIN, "preprocess", path, "--output", out, "--size", str(size)]
    if resize:
        cmd += ["--resize", str(resize)]
    if crop_pct is not None:
        cmd += ["--crop-pct", repr(crop_pct)]
    if interp:
        cmd += ["--interp", interp]
    if mean:
        cmd += ["--mean", ",".join(repr(v) for v in mean)]
    if std:
        cmd += ["--std", ",".join(repr(v) for v in std)]
    if gray:
        cmd += ["--gray"]
    if not exif:
        cmd += ["--no-exif"]
    cmd += list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def compare(name, path, size=224, resize=None, crop_pct=0.875, interp="bicubic", mean=IMAGENET_MEAN,
            std=IMAGENET_STD, gray=False, exif=True, ref=None, extra=()):
    out = os.path.join(TMP, name + ".f32")
    r = run_lsq(path, out, size, resize, crop_pct, interp, mean, std, gray, exif, extra)
    if r.returncode != 0:
        report(name, False, f"lsq exited {r.returncode}: {r.stderr.strip()}")
        return
    got = np.fromfile(out, dtype=np.float32)
    if ref is None:
        ref = reference(path, size, resize, crop_pct, interp, mean, std, gray, exif)
    if got.size != ref.size:
        report(name, False, f"{got.size} values written, expected {ref.size} (shape {ref.shape})")
        return
    got = got.reshape(ref.shape)
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    level = (1.0 / 255.0 / np.asarray(std, dtype=np.float64)).reshape(1, 3, 1, 1)
    levels = diff / level
    exact = float(np.mean(diff <= 1e-6))
    worst = float(levels.max())
    stats["values"] += diff.size
    stats["exact"] += int(np.sum(diff <= 1e-6))
    stats["max_levels"] = max(stats["max_levels"], worst)
    ok = worst <= 1.0 + 1e-4 and exact >= EXACT_FRACTION
    report(name, ok, f"max |diff| = {worst:.3f} levels, exact {100 * exact:.3f}% (need <= 1 level and "
                     f">= {100 * EXACT_FRACTION}% exact)")


def compare_dct(name, path, size=224, crop_pct=0.875, interp="bicubic"):
    """DCT-domain scaling trades exactness for speed: require a mean under 1.5 levels and no value
    off by more than 32 levels, and print the measured figures."""
    out = os.path.join(TMP, name + ".f32")
    r = run_lsq(path, out, size, None, crop_pct, interp, extra=("--dct-scale",))
    if r.returncode != 0:
        report(name, False, f"lsq exited {r.returncode}: {r.stderr.strip()}")
        return
    ref = reference(path, size, None, crop_pct, interp, IMAGENET_MEAN, IMAGENET_STD, False, True)
    got = np.fromfile(out, dtype=np.float32).reshape(ref.shape)
    level = (1.0 / 255.0 / np.asarray(IMAGENET_STD)).reshape(1, 3, 1, 1)
    levels = np.abs(got.astype(np.float64) - ref) / level
    mean, worst, exact = float(levels.mean()), float(levels.max()), float(np.mean(levels < 1e-3))
    print(f"# {name}: mean |diff| {mean:.3f} levels, max {worst:.1f}, exact {100 * exact:.1f}%")
    report(name, mean < 1.5 and worst <= 32, f"mean {mean:.3f} levels, max {worst:.1f} (limits 1.5, 32)")


def expect_failure(name, path, status, needle, extra=()):
    out = os.path.join(TMP, name + ".f32")
    r = run_lsq(path, out, extra=extra)
    ok = r.returncode == status and needle.lower() in r.stderr.lower()
    report(name, ok, f"exit {r.returncode} (want {status}), stderr {r.stderr.strip()!r} (want {needle!r})")


def save(img, name, **kw):
    path = os.path.join(TMP, name)
    img.save(path, **kw)
    return path


def main():
    base = synthetic_rgb(500, 375, 1)

    # --- JPEG, the main path: downscale, each interpolation, odd sizes, chroma subsampling ---
    jpg = save(base, "rgb420.jpg", quality=90)
    for interp in ("bicubic", "bilinear", "nearest"):
        compare(f"jpeg_420_{interp}_224", jpg, interp=interp)
    jpg444 = save(synthetic_rgb(333, 517, 2), "rgb444.jpg", quality=95, subsampling=0)
    compare("jpeg_444_odd_bicubic_199_crop0.9", jpg444, size=199, crop_pct=0.9)
    compare("jpeg_444_odd_bilinear_97", jpg444, size=97, crop_pct=0.95, interp="bilinear")
    jpg422 = save(synthetic_rgb(641, 479, 3), "rgb422.jpg", quality=80, subsampling=1)
    compare("jpeg_422_bicubic_256", jpg422, size=256, crop_pct=1.0)
    compare("jpeg_progressive", save(base, "prog.jpg", quality=85, progressive=True), interp="bilinear")
    compare("jpeg_gray", save(base.convert("L"), "gray.jpg", quality=90))
    compare("jpeg_big_downscale_bicubic", save(synthetic_rgb(1600, 1200, 4), "big.jpg", quality=85))

    # --- upscaling, including the Fashion-MNIST case (28x28 grey -> 32) ---
    small = synthetic_rgb(100, 80, 5)
    png_small = save(small, "small.png")
    for interp in ("bicubic", "bilinear", "nearest"):
        compare(f"png_upscale_100x80_{interp}_224", png_small, interp=interp)
    mnist = Image.fromarray(np.random.default_rng(6).integers(0, 256, (28, 28), dtype=np.uint8), "L")
    png_mnist = save(mnist, "mnist.png")
    for interp in ("bilinear", "bicubic"):
        compare(f"gray_28_to_32_{interp}", png_mnist, size=32, crop_pct=1.0, interp=interp, gray=True,
                mean=(0.2860,) * 3, std=(0.3530,) * 3)
    compare("gray_28_to_32_resize36", png_mnist, size=32, resize=36, interp="bilinear", gray=True)
    compare("rgb_to_gray_jpeg", jpg, gray=True, interp="bilinear")

    # --- crop geometry: crop_pct float trap (224 / 0.8 = 280), padding when the crop is larger ---
    compare("crop_pct_0.8", jpg, crop_pct=0.8)
    compare("crop_pct_1.15_pads", png_small, size=64, crop_pct=1.15, interp="bilinear")
    compare("resize_smaller_than_crop_pads", jpg, size=224, resize=200, interp="bicubic")
    compare("same_size_no_resize", save(synthetic_rgb(224, 300, 7), "same.png"), size=224, crop_pct=1.0)
    compare("tall_odd_crop_offsets", save(synthetic_rgb(61, 203, 8), "tall.png"), size=49, crop_pct=0.96)
    compare("custom_mean_std", jpg, mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 1.0))

    # --- PNG colour types ---
    compare("png_rgb", save(base, "rgb.png"))
    compare("png_gray", save(base.convert("L"), "gray.png"))
    compare("png_palette", save(base.convert("P", palette=Image.ADAPTIVE, colors=200), "pal.png"))
    pal_t = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    compare("png_palette_trns", save(pal_t, "palt.png", transparency=3))
    rgba = base.copy()
    rgba.putalpha(Image.fromarray((np.arange(500 * 375) % 256).astype(np.uint8).reshape(375, 500)))
    compare("png_rgba_alpha_dropped", save(rgba, "rgba.png"))
    compare("png_la", save(rgba.convert("LA"), "la.png"))
    compare("png_1bit", save(base.convert("1"), "bw.png"))
    compare("png_interlaced", write_interlaced(base))
    arr16 = np.asarray(base).astype(np.uint16) * 257 + np.random.default_rng(9).integers(0, 257, (375, 500, 3),
                                                                                         dtype=np.uint16)
    compare("png_rgb16", write_png_raw(arr16, "rgb16.png", 16, 2))
    alpha16 = np.random.default_rng(12).integers(0, 65536, (375, 500, 1), dtype=np.uint16)
    compare("png_rgba16", write_png_raw(np.concatenate([arr16, alpha16], axis=2), "rgba16.png", 16, 6))
    compare("png_la16", write_png_raw(np.concatenate([arr16[..., :1], alpha16], axis=2), "la16.png", 16, 4))
    compare("png_gray2bit", write_png_raw((np.asarray(base)[..., 0] >> 6), "gray2.png", 2, 0))
    g16 = (arr16[..., 1]).astype(np.uint16)
    path_g16 = save(Image.fromarray(g16.astype(np.int32), "I").convert("I;16"), "gray16.png")
    hi = Image.fromarray((g16 >> 8).astype(np.uint8), "L").convert("RGB")
    compare("png_gray16_high_byte", path_g16,
            ref=reference_from_rgb(hi, 224, None, 0.875, "bicubic", IMAGENET_MEAN, IMAGENET_STD))

    # --- WebP ---
    compare("webp_lossy", save(base, "lossy.webp", quality=80))
    compare("webp_lossless", save(base, "lossless.webp", lossless=True))
    compare("webp_alpha", save(rgba, "alpha.webp", quality=80))

    # --- CMYK JPEG, as PIL (and Photoshop) write it: Adobe marker, inverted samples ---
    compare("jpeg_cmyk", save(base.convert("CMYK"), "cmyk.jpg", quality=95))

    # --- EXIF orientation: all 8, against ImageOps.exif_transpose ---
    rect = synthetic_rgb(160, 96, 10)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        p = save(rect, f"exif{o}.jpg", quality=92, exif=exif.tobytes())
        compare(f"exif_orientation_{o}", p, size=64, interp="bilinear")
    compare("exif_ignored_with_no_exif", os.path.join(TMP, "exif6.jpg"), size=64, interp="bilinear", exif=False)

    # --- --dct-scale (off by default, not PIL-exact): report the difference, bound it loosely ---
    compare_dct("dct_scale_half_1600x1200", os.path.join(TMP, "big.jpg"))
    blurred = synthetic_rgb(800, 600, 11).resize((3200, 2400), Image.BICUBIC)
    compare_dct("dct_scale_quarter_3200x2400", save(blurred, "huge.jpg", quality=90))
    compare("dct_scale_not_used_below_2x", jpg, extra=("--dct-scale",))  # 375 < 2 * 256: full decode

    # --- errors: status 1 for bad input, 2 for bad usage ---
    data = open(jpg, "rb").read()
    trunc = os.path.join(TMP, "trunc.jpg")
    open(trunc, "wb").write(data[: len(data) // 2])
    expect_failure("error_truncated_jpeg", trunc, 1, "truncated")
    empty = os.path.join(TMP, "empty.png")
    open(empty, "wb").close()
    expect_failure("error_empty_file", empty, 1, "empty")
    expect_failure("error_missing_file", os.path.join(TMP, "no-such-file.jpg"), 1, "no such file")
    expect_failure("error_not_an_image", __file__, 1, "unrecognised image format")
    expect_failure("usage_bad_interp", jpg, 2, "invalid value", extra=("--interp", "lanczos"))
    expect_failure("usage_unknown_flag", jpg, 2, "unknown option", extra=("--frobnicate", "1"))

    print(f"# {stats['values']} values compared, {100 * stats['exact'] / max(stats['values'], 1):.4f}% exact, "
          f"max |diff| {stats['max_levels']:.3f} levels")
    return 1 if failures else 0


def write_interlaced(img):
    """PIL cannot write Adam7 PNGs; build one with zlib (8-bit RGB, filter 0 per pass row)."""
    import struct
    import zlib
    a = np.asarray(img)
    h, w, _ = a.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\0" + row.tobytes()
    path = os.path.join(TMP, "adam7.png")
    write_png_chunks(path, struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1), zlib.compress(raw))
    return path


def write_png_raw(arr, name, depth, color):
    """PNG from an array of samples: (h, w, channels) for 8/16 bits, (h, w) of 0..3 for 2-bit grey."""
    import struct
    import zlib
    h, w = arr.shape[:2]
    if depth == 16:
        rows = [row.astype(">u2").tobytes() for row in arr]
    elif depth == 2:
        padded = np.zeros((h, (w + 3) // 4 * 4), dtype=np.uint8)
        padded[:, :w] = arr
        q = padded.reshape(h, -1, 4)
        rows = [((r[:, 0] << 6) | (r[:, 1] << 4) | (r[:, 2] << 2) | r[:, 3]).astype(np.uint8).tobytes() for r in q]
    else:
        rows = [row.astype(np.uint8).tobytes() for row in arr]
    path = os.path.join(TMP, name)
    write_png_chunks(path, struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0),
                     zlib.compress(b"".join(b"\0" + r for r in rows)))
    return path


def write_png_chunks(path, ihdr, idat):
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
