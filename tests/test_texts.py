"""The page texts are short, agree with each other and with the labs, and name each strategy one way (issue 22).

Every i18n file in ``resnet/assets/i18n`` is read directly (a file added later is checked too)."""
import json
import re
from pathlib import Path

import pytest

I18N = Path(__file__).resolve().parent.parent / "resnet" / "assets" / "i18n"
CJK = re.compile(r"[\u4e00-\u9fff]")
WORD = re.compile(r"[A-Za-z0-9\u00C0-\u024F{][\w'’.,:{}×−-]*")  # "7.93", "ResNet-56", "{gap:+.2f}": one word each

# One block of text on the page: 80 English words, about half a minute of reading. The app's own translations run at
# about two Chinese characters per English word (median over the table, 1.9), so 80 words ≈ 160 characters; only
# CJK ideographs are counted (names, numbers and formulas are the same in both languages).
MAX_WORDS, MAX_CHARS = 80, 160
# A "More" fold (a key ending in ``.more``, shown by ``resnet.ui.common.explained``) may say more, but not a page.
MORE_WORDS, MORE_CHARS = 200, 400
ALLOWED_LONG: dict[str, str] = {}  # key → why it may be longer; none needed so far


def strings() -> dict[str, dict[str, str]]:
    table = {}
    for path in sorted(I18N.glob("*.json")):
        table.update(json.loads(path.read_text(encoding="utf-8")))
    return table


def words(text: str) -> int:
    return len(WORD.findall(text))


@pytest.mark.unit
def test_no_text_block_is_longer_than_a_glance():
    table = strings()
    assert len(table) > 100 and words("plain-56 ends **{gap:+.2f}** above 7.93 %") == 6
    too_long = []
    for key, langs in table.items():
        if key in ALLOWED_LONG:
            continue
        fold = key.endswith(".more")
        max_words, max_chars = (MORE_WORDS, MORE_CHARS) if fold else (MAX_WORDS, MAX_CHARS)
        n, c = words(langs["en"]), len(CJK.findall(langs["zh-CN"]))
        if n > max_words or c > max_chars:
            too_long.append(f"{key}: {n} words (≤ {max_words}), {c} characters (≤ {max_chars})")
    assert not too_long, "\n".join(too_long)


@pytest.mark.unit
def test_every_fold_belongs_to_a_page_text():
    table = strings()
    folds = [k for k in table if k.endswith(".more")]
    assert folds, "no folds: the long explanations are gone or renamed"
    for key in folds:
        assert key.removesuffix(".more") in table, key
    assert "app.fold" in table  # the fold's own label


# The sentences that contradicted the labs or each other (issue 22), in both languages.
CONTRADICTIONS = {
    # "depth cannot hurt", beside the 1202-layer net that tests worse than the 110-layer one
    r"cannot hurt": "extra blocks can overfit: say 'need not make training worse'",
    r"can no longer make the network worse": "say 'need not make training worse'",
    r"no longer hurts": "say what this run showed: 'did not make training worse in this run'",
    r"不会带来损害": "多加的块不必让训练变差", r"加深不再带来损害": "这次加深没有让训练变差",
    r"不会再让效果变差": "不必让训练变差",
    # the projection shortcut is not only where a stage halves the resolution (conv2_x of ResNet-50: 64 → 256, stride 1)
    r"When a stage halves the resolution and widens": "conv2_x's first bottleneck projects at stride 1",
    r"当某个阶段把分辨率减半、通道数加宽时": "conv2_x 的第一个瓶颈块以步长 1 投影",
    # degradation: the note's gradients (without BN) and the paper's optimisation difficulty (with BN) in one story
    r"gradients faded or blew up on the long way back, and optimisation got stuck": "say which holds with and without BN",
    # a result stated before the run that shows it
    r"plain-56's first layer gets \*more\* gradient": "a reading computed after the run (labs.flow.reading_grow)",
    r"The 56-layer plain net ends well above the 20-layer one": "phrase it as the race's question",
    r"only eval mode gives an answer that does not depend on the batch": "phrase it as the lab's question",
    r"a bias in the convolution before BN changes nothing": "phrase it as the lab's question",
    r"56 层的普通网络最终明显高于 20 层的": "问题的形式", r"普通网络-56 第一层得到的梯度反而\*比\*": "运行后的解读",
    # jargon without its explanation
    r"linear probe": "say 'a single linear layer on the pooled features'",
}
# GLOSSARY.md's words, where the Chinese strayed.
GLOSSARY_DEPARTURES = {
    "前向": "正向传播 (the note: μ σ² 在正向传播过程中统计得到)",
    "批均值": "小批量均值 (Algorithm 1's mini-batch) or 这一批的均值",
    "批方差": "小批量方差 (Algorithm 1's mini-batch) or 这一批的方差",
    "微调": "迁移学习 (the note's and the tab's word)",
}


@pytest.mark.unit
def test_no_sentence_contradicts_the_labs_or_another_page():
    found = [f"{key} [{lang}]: {pattern!r} → {fix}" for key, langs in strings().items() for lang, text in langs.items()
             for pattern, fix in CONTRADICTIONS.items() if re.search(pattern, text)]
    assert not found, "\n".join(found)


@pytest.mark.unit
def test_the_chinese_keeps_to_the_glossary():
    table = strings()
    wrong = [f"{key}: {bad} → {good}" for key, langs in table.items() for bad, good in GLOSSARY_DEPARTURES.items()
             if bad in langs["zh-CN"]]
    for key, langs in table.items():
        zh = langs["zh-CN"]
        # No space between Chinese text and 普通网络 (a space after a bold label, "**普通网络：** 普通网络-56", is
        # Markdown's: the closing ** needs it after the full-width colon).
        if re.search(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef] +普通网络", zh):
            wrong.append(f"{key}: a space before 普通网络: {zh}")
        # Chinese has no italics: single-asterisk emphasis renders as slanted CJK (bold ** is fine).
        if re.search(r"(?<![*\\])\*(?![*\s])[^*\n]+(?<![*\s])\*(?!\*)", zh):
            wrong.append(f"{key}: *italics* in Chinese: {zh}")
    assert not wrong, "\n".join(wrong)


# The pages a visitor reads at once (a key's area → its page); each introduces 轮（epoch） once, then says 轮.
PAGE_OF = {"engine": "finetune", "pretrain": "finetune", "budget": "finetune", "strategy": "finetune",
           "plot": "finetune", "arch": "architecture"}


@pytest.mark.unit
def test_epoch_is_introduced_once_per_page():
    pages: dict[str, list[str]] = {}
    for key, langs in strings().items():
        if "（epoch" in langs["zh-CN"]:
            area = key.split(".")[0]
            pages.setdefault(PAGE_OF.get(area, area), []).append(key)
    repeated = {page: keys for page, keys in pages.items() if len(keys) > 1}
    assert not repeated, repeated


# ---------------------------------------------------------------------------- the strategies' names

STRATEGIES = ("all", "last", "head", "replace", "scratch")
# The names used before issue 22 (About, the strategy titles, the choices): each strategy had three.
RETIRED = ("Train the last stage", "Train the last layers", "Train everything", "Train all**", "Replace the fc only",
           "Add a new fc on top", "Add a new fully-connected layer**", "From scratch (control)",
           "**载入权重后训练所有参数**", "**载入权重后只训练最后几层参数**", "从零训练（随机初始化，对照组）")


def display_names(table, lang: str) -> dict[str, set[str]]:
    return {s: {table[k][lang] for k in (f"finetune.name_{s}", f"strategy.{s}.title")} for s in STRATEGIES}


@pytest.mark.unit
def test_each_strategy_has_one_name_per_language_used_everywhere_it_is_named():
    table = strings()
    for lang in ("en", "zh-CN"):
        names = display_names(table, lang)
        assert all(len(n) == 1 for n in names.values()), (lang, names)
        names = {s: n.pop() for s, n in names.items()}
        assert len(set(names.values())) == len(STRATEGIES), names
        assert all(name.lower() != s for s, name in names.items()), f"a code name shown as the name: {names}"
        for key, langs in table.items():
            text = langs[lang]
            assert not [r for r in RETIRED if r in text], f"{key}: an old name: {text}"
            # Wherever a code name is given (`last`), the strategy's one name is there too.
            for s, name in names.items():
                if f"`{s}`" in text:
                    assert name in text, f"{key} [{lang}]: `{s}` without its name {name!r}: {text}"
    # The code names appear, once each, where the strategies are explained: the About tab and the Fine-tune help.
    for key in ("about.transfer", "finetune.strategy_help"):
        text = table[key]["en"] + table.get(key + ".more", {}).get("en", "")
        for s in ("all", "last", "head"):
            assert f"`{s}`" in table[key]["en"], (key, s)
    # head is the note's way 3 (on top of the old classifier), said in one sentence beside what courses call a head.
    for key in ("about.transfer.more", "finetune.strategy_help"):
        assert re.search(r"“head”.*head\W* is the note's way 3", table[key]["en"]), key
        assert "笔记的第 3 种方式" in table[key]["zh-CN"], key
