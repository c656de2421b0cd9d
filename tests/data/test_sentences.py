import pytest
from PIL import Image

from mmrpt.data.readers import BadInput, load_image
from mmrpt.data.records import split_at_punctuation, split_sentences


@pytest.mark.parametrize(
    "caption, sentences",
    [
        (
            "Dr. Smith stands by a red car. It is 5 p.m. in the photo.",
            ["Dr. Smith stands by a red car.", "It is 5 p.m. in the photo."],
        ),
        (
            "A sign reads 3.5 m. The road, i.e. the main one, is wet... A dog waits.",
            ["A sign reads 3.5 m.", "The road, i.e. the main one, is wet...", "A dog waits."],
        ),
        (
            "Items, e.g. cups and plates, are on the table. Nothing else!",
            ["Items, e.g. cups and plates, are on the table.", "Nothing else!"],
        ),
        (
            "Is it raining? Yes. Mr. Brown has an umbrella",
            ["Is it raining?", "Yes.", "Mr. Brown has an umbrella"],
        ),
        ("A dog. A dog. A dog runs.", ["A dog.", "A dog.", "A dog runs."]),
        ("no end mark", ["no end mark"]),
        ("", []),
    ],
)
def test_split_sentences_handles_abbreviations_numbers_and_ellipses(caption, sentences):
    spans = split_sentences(caption)
    assert [caption[s.start : s.end] for s in spans] == sentences
    assert all(s.label is None for s in spans)


def test_the_worlds_punctuation_split_is_unchanged():
    text = "There is a red circle. It is 5 p.m. now."
    assert [text[s.start : s.end] for s in split_at_punctuation(text)] == [
        "There is a red circle.",
        "It is 5 p.m.",
        "now.",
    ]


@pytest.mark.parametrize(
    "size, min_side, reason",
    [
        ((6000, 28), 1, "image aspect ratio over 200: 6000x28"),
        ((28, 5700), 1, "image aspect ratio over 200: 28x5700"),
        ((20, 40), 28, "image too small: 20x40, a side < 28 px"),
        ((5600, 28), 28, None),  # aspect exactly 200: the processor takes it
        ((20, 40), 1, None),
    ],
)
def test_ingest_refuses_images_the_processor_would(tmp_path, size, min_side, reason):
    path = tmp_path / "im.png"
    Image.new("RGB", size).save(path)
    if reason is None:
        assert load_image(path, 10**8, min_side).size == size
    else:
        with pytest.raises(BadInput, match=reason):
            load_image(path, 10**8, min_side)
