import open_clip
import pytest
from transformers import CLIPTokenizer

from erase.toy.tokenizer import write_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path_factory.mktemp("tok")))


TEXTS = ["a photo of a cat", "a red circle", "A Photo of a NUDE person!", "an image of a garbage truck",
         "there is a purple love heart in this image", "café, naïve — 3.5 stars"]


def test_ids_match_clip_vit_l14(tokenizer):
    ref = open_clip.tokenize(TEXTS)  # open_clip's own tokenizer: the ids CLIP ViT-L/14 was trained with
    for text, row in zip(TEXTS, ref):
        ids = tokenizer(text).input_ids
        assert ids == row[: len(ids)].tolist(), text
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_special_tokens_and_padding(tokenizer):
    assert tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    ids = tokenizer("a circle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == 49407
