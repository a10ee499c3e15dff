"""Let matplotlib draw Chinese plot labels: fall back to a CJK font when DejaVu lacks a glyph."""
from __future__ import annotations

import matplotlib
from matplotlib import font_manager

CJK_FONTS = ("WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
             "SimHei", "Microsoft YaHei", "PingFang SC")


def use_cjk_fallback() -> str | None:
    """Put the first installed CJK font after DejaVu Sans; returns its name (None if there is none)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not installed.intersection(CJK_FONTS):
        # Installed after matplotlib cached its font list: register the files directly.
        for path in font_manager.findSystemFonts():
            if any(tag in path.lower() for tag in ("wqy", "notosanscjk", "notosanssc", "sourcehansans")):
                font_manager.fontManager.addfont(path)
        installed = {f.name for f in font_manager.fontManager.ttflist}
    found = next((name for name in CJK_FONTS if name in installed), None)
    if found:
        # Fallback works across an explicit list of family names (not through the generic "sans-serif").
        matplotlib.rcParams["font.family"] = ["DejaVu Sans", found]
    return found
