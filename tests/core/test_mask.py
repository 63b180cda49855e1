import pytest
import torch
from torch import nn

from erase.core.errors import UserError
from erase.core.mask import (Mask, accumulate_gradients, compute_mask, global_threshold, pack_bits,
                        select_parameters, top_fraction_mask, unpack_bits)
from erase.toy.models import make_unet


def _scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"t{i}": torch.randn(s, generator=g) for i, s in enumerate([(50, 30), (7,), (16, 8, 3, 3), (999,)])}


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.93, 1.0])
def test_global_threshold_equals_topk(keep):
    sc = _scores()
    flat = torch.cat([v.abs().reshape(-1) for v in sc.values()])
    thr, k, total = global_threshold(sc.values(), keep)
    assert total == flat.numel() and thr == torch.topk(flat, k).values[-1].item()
    m = top_fraction_mask(sc, keep)
    assert sum(int(v.sum()) for v in m.values()) == k  # continuous scores: no ties
    # global ranking: tensors keep different fractions
    if keep == 0.5:
        sc["t1"] = sc["t1"] * 100
        m = top_fraction_mask(sc, keep)
        assert bool(m["t1"].all())


def test_per_tensor_scope():
    m = top_fraction_mask(_scores(), 0.25, scope="tensor")
    for name, t in m.items():
        assert abs(t.float().mean().item() - 0.25) < 0.15, name
    with pytest.raises(UserError):
        top_fraction_mask(_scores(), 0.0)


def test_bit_packing_roundtrip_and_size(tmp_path):
    m = {"a": torch.rand(1000, 37) > 0.5, "b": torch.rand(3) > 0.5}
    for v in m.values():
        assert torch.equal(unpack_bits(pack_bits(v), v.shape), v)
    path = Mask(m, {"keep": 0.5, "prompts": ["a red circle"]}).save(tmp_path / "m.safetensors")
    assert path.stat().st_size < 37000 / 8 + 2000  # about one bit a weight
    back = Mask.load(path)
    assert all(torch.equal(back.masks[k], m[k]) for k in m)
    assert back.meta["keep"] == 0.5 and back.meta["prompts"] == ["a red circle"]


def test_presets_select_the_right_weights():
    unet = make_unet()
    attn2 = select_parameters(unet, "attn2")
    assert attn2 and all(".attn2." in n for n in attn2)
    res = select_parameters(unet, "resnets")
    assert res and all(".resnets." in n for n in res)
    assert len(select_parameters(unet, "all")) == len(list(unet.parameters()))
    assert all("to_k" in n for n in select_parameters(unet, r"re:attn2\.to_k"))
    with pytest.raises(UserError, match="matches no parameter"):
        select_parameters(unet, "re:nothing_like_this")
    with pytest.raises(UserError, match="unknown parameter selection"):
        select_parameters(unet, "everything")


def test_clipped_accumulation_bounds_each_batch():
    model = nn.Linear(4, 3)
    params = dict(model.named_parameters())
    batches = [torch.full((2, 4), 100.0)] * 5
    acc, n = accumulate_gradients(model, params, lambda x: model(x).pow(2).sum(), batches, clip_grad_norm=1.0,
                                  progress=False)
    total = torch.sqrt(sum(v.pow(2).sum() for v in acc.values()))
    assert n == 5 and total <= 5.0 + 1e-4  # five batches, each clipped to norm 1
    with pytest.raises(UserError, match="no forget data"):
        accumulate_gradients(model, params, lambda x: x.sum(), [], progress=False)


def test_mask_refuses_another_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    mask = compute_mask(model, lambda x: model(x).sum(), [torch.randn(2, 4)], progress=False)
    mask.check_model(model)
    other_shape = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2))
    with pytest.raises(UserError, match="another model"):
        mask.check_model(other_shape)
    with pytest.raises(UserError, match="missing"):
        mask.check_model(nn.Sequential(nn.Linear(4, 3)))
    other_weights = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with pytest.raises(UserError, match="fingerprint"):
        mask.check_model(other_weights)
    mask.check_model(other_weights, strict_fingerprint=False)


def test_in_place_gradient_sum_equals_the_float32_accumulator():
    """Without clipping the sum lives in the weights' own .grad (no second buffer); it must be the very
    same numbers as the separate float32 accumulator the clipped path keeps (clip at inf changes nothing)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    params = dict(model.named_parameters())
    batches = [torch.randn(4, 6) for _ in range(3)]
    in_place, n = accumulate_gradients(model, params, lambda x: model(x).pow(2).sum(), batches, progress=False)
    apart, _ = accumulate_gradients(model, params, lambda x: model(x).pow(2).sum(), batches,
                                    clip_grad_norm=float("inf"), progress=False)
    assert n == 3 and all(torch.equal(in_place[k], apart[k]) for k in params)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind on the weights
    mask = compute_mask(model, lambda x: model(x).pow(2).sum(), batches, progress=False)
    assert mask.meta["gradient_sum"] == "in the weights' gradients"
    clipped = compute_mask(model, lambda x: model(x).pow(2).sum(), batches, clip_grad_norm=1.0, progress=False)
    assert clipped.meta["gradient_sum"].startswith("float32 accumulator")



def test_half_precision_gradients_are_folded_into_the_float32_sum_as_backward_produces_them():
    """bf16 weights: each tensor's gradient is added into its float32 sum as soon as backward has it, then
    dropped, so no weight-sized set of bf16 gradients lives beside the sum; the sum is the float32 sum of every
    backward's bf16 gradients (here two backward passes a batch, as the lean mask pass takes its two terms)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(torch.bfloat16)
    params = dict(model.named_parameters())
    batches = [torch.randn(4, 6, dtype=torch.bfloat16) for _ in range(3)]
    left_behind = []

    def terms(x):  # each term is backpropagated before the next is asked for
        yield model(x).pow(2).sum()
        left_behind.append([n for n, p in params.items() if p.grad is not None])
        yield model(x * 0.5).abs().sum()

    sums, n = accumulate_gradients(model, params, terms, batches, progress=False)
    expected = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in params.items()}
    for x in batches:
        for loss in (lambda: model(x).pow(2).sum(), lambda: model(x * 0.5).abs().sum()):
            model.zero_grad(set_to_none=True)
            loss().backward()
            for k, p in params.items():
                expected[k] += p.grad.float()
    model.zero_grad(set_to_none=True)
    assert n == 3 and left_behind == [[]] * 3
    assert all(sums[k].dtype == torch.float32 and torch.equal(sums[k], expected[k]) for k in params)
    assert all(p.grad is None and not p._post_accumulate_grad_hooks for p in model.parameters())
    mask = compute_mask(model, lambda x: model(x).pow(2).sum(), batches, progress=False)
    assert mask.meta["gradient_sum"].startswith("float32 accumulator, each gradient folded in")
    clipped = compute_mask(model, lambda x: model(x).pow(2).sum(), batches, clip_grad_norm=1.0, progress=False)
    assert clipped.meta["gradient_sum"] == "float32 accumulator beside the gradients (per-batch clipping)"


def test_the_fold_leaves_no_hook_or_gradient_behind_when_a_batch_fails_or_is_another_processs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(torch.bfloat16)
    params = dict(model.named_parameters())
    x = torch.randn(4, 6, dtype=torch.bfloat16)

    def failing(batch):
        yield model(x).pow(2).sum()
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        accumulate_gradients(model, params, failing, [0], progress=False)
    assert all(p.grad is None and not p._post_accumulate_grad_hooks for p in model.parameters())
    sums, n = accumulate_gradients(model, params, lambda b: None if b else model(x).pow(2).sum(), [0, 1],
                                   progress=False)  # batch 1 is another process's
    alone, _ = accumulate_gradients(model, params, lambda b: model(x).pow(2).sum(), [0], progress=False)
    assert n == 1 and all(torch.equal(sums[k], alone[k]) for k in params)

def test_non_finite_gradient_sums_are_refused():
    class InfGrad(torch.autograd.Function):  # a finite loss whose gradient overflows (as fp16 autocast can)
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    model = nn.Linear(3, 2)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        compute_mask(model, lambda x: InfGrad.apply(model(x)).sum(), [torch.ones(1, 3)], progress=False)
