import numpy as np
import pytest

from erase.core.errors import UserError
from erase.toy import shapes as S


def test_draw_set_is_deterministic_and_balanced():
    a = S.draw_set(120, seed=3)
    b = S.draw_set(120, seed=3)
    c = S.draw_set(120, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    counts = np.bincount(a.shape_ids * len(S.COLOURS) + a.colour_ids, minlength=len(S.SHAPES) * len(S.COLOURS))
    assert counts.min() == counts.max() == 4  # 120 images over 30 shape x colour pairs
    assert a.images.shape == (120, 32, 32, 3) and a.images.dtype == np.uint8


def test_captions_name_the_drawn_shape_and_use_synonyms():
    data = S.draw_set(600, seed=0)
    used = set()
    for cap, sid, cid in zip(data.captions, data.shape_ids, data.colour_ids):
        shape, colour = list(S.SHAPES)[sid], list(S.COLOURS)[cid]
        words = [w for w in S.SHAPES[shape] if w in cap]
        assert words, cap
        used.update(words)
        other = [w for s, ws in S.SHAPES.items() if s != shape for w in ws if f" {w}" in f" {cap}"]
        assert not other, cap
        if colour not in cap:  # colour-free captions name no colour at all
            assert not any(c in cap for c in S.COLOURS), cap
    assert {"circle", "disk", "square", "box"} <= used


def test_heldout_phrasings_never_appear_in_training():
    data = S.draw_set(2000, seed=0)
    stems = [t.split("{")[0].strip() for t in S.HELDOUT_TEMPLATES]
    assert all(stem for stem in stems)
    for cap in data.captions:
        assert not any(cap.startswith(stem) for stem in stems), cap


def test_the_shape_is_in_the_picture():
    rng = np.random.default_rng(0)
    for shape in S.SHAPES:
        img = np.asarray(S.draw(shape, "red", rng)).astype(int)
        red = (img[..., 0] > 150) & (img[..., 1] < 110) & (img[..., 2] < 110)
        assert red.sum() > 40, shape  # a visible shape, not a speck


def test_exclude_and_unknown_names():
    data = S.draw_set(60, seed=0, shapes=["square", "star"])
    assert set(data.shape_ids.tolist()) == {list(S.SHAPES).index("square"), list(S.SHAPES).index("star")}
    with pytest.raises(UserError, match="unknown shape 'octagon'"):
        S.draw_set(10, seed=0, shapes=["octagon"])
    with pytest.raises(UserError, match="unknown colour"):
        S.check_colours(["mauve"])
