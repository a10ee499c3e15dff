"""Every string the app shows exists in English and Simplified Chinese, and every key used exists."""
import re
from pathlib import Path

import pytest

from resnet import i18n

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_key_has_both_languages():
    table = i18n.table()
    assert len(table) > 20
    for key, langs in table.items():
        assert set(langs) == set(i18n.LANGS), key
        assert langs["en"].strip() and langs["zh-CN"].strip(), key
        assert CJK.search(langs["zh-CN"]), f"{key}: the Chinese text has no Chinese characters"
        # The same placeholders in both languages, so formatting never fails in one of them.
        assert set(re.findall(r"{(\w+)", langs["en"])) == set(re.findall(r"{(\w+)", langs["zh-CN"])), key


def test_every_key_used_in_the_code_is_defined():
    used = set()
    for path in (ROOT / "resnet").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bctx\(\s*["']([\w.]+)["']""", text))
        used |= set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", text))
    assert used, "no keys found: the pattern is wrong"
    missing = used - set(i18n.table())
    assert not missing, missing


def test_language_from_browser_header_and_lookup():
    assert i18n.lang_from_header("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert i18n.lang_from_header("en-GB,en;q=0.9") == "en"
    assert i18n.lang_from_header(None) == "en"
    assert i18n.t("tab.classify", "zh-CN") == "图像分类"
    assert "5.00" in i18n.t("arch.totals", "en", title="X", size=1, params=5, macs=1)
    assert set(i18n.translations()) == {"en", "zh-CN"}
