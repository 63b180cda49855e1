import pytest
import torch

from erase.core.mask import compute_mask
from erase.core.masked_optim import MaskedParameters, keeps_zero_grad_weights
from erase.toy.models import make_unet


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),  # needs the write-back
    lambda ps: torch.optim.Adam(ps, lr=1e-2),  # exact through zero moments alone
    lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
    lambda ps: torch.optim.RMSprop(ps, lr=1e-3, weight_decay=0.01),  # unknown optimizer: write-back
])
def test_only_masked_weights_move(make_opt):
    torch.manual_seed(0)
    unet = make_unet()
    base = {n: p.detach().clone() for n, p in unet.named_parameters()}
    z, t, ctx = torch.randn(4, 4, 8, 8), torch.randint(0, 1000, (4,)), torch.randn(4, 77, 64)
    mask = compute_mask(unet, lambda b: unet(z, t, ctx).sample.pow(2).mean(), [0], selection="all", keep=0.3,
                        progress=False)
    tp = MaskedParameters(unet, mask)
    # Weight decay would move masked-out weights if only gradients were masked.
    opt = make_opt(tp.parameters())
    tp.attach(opt)
    assert bool(tp.frozen) != keeps_zero_grad_weights(opt)  # the write-back is kept exactly where needed
    for _ in range(5):
        loss = unet(torch.randn(4, 4, 8, 8), t, ctx).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        tp.step(opt)
    moved = 0
    for n, p in unet.named_parameters():
        m = mask.masks[n]
        assert torch.equal(p.detach()[~m], base[n][~m]), n  # bit-identical outside the mask
        moved += int((p.detach()[m] != base[n][m]).sum())
    assert moved > 0.9 * mask.kept  # and the salient weights did train
