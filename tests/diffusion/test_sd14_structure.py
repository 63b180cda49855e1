"""SD v1.4's real architecture (built on the meta device: no memory, no weights) matches the toy's naming."""
from fixture_models.real_configs import sd14_unet
from erase.core.mask import select_parameters
from erase.toy.models import make_unet


def test_sd14_unet_size_and_presets():
    unet = sd14_unet("meta")
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD v1.4's UNet
    attn2 = select_parameters(unet, "attn2")
    assert len(attn2) == 16 * 5  # 16 transformer blocks x (to_q, to_k, to_v, to_out weight + bias)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" in attn2
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.shape == (320, 768)
    # A 1-bit mask of the whole UNet is about 100 MiB (the reference's int64 masks: 6.4 GiB).
    assert 100 < sum(p.numel() for p in unet.parameters()) / 8 / 2**20 < 105


def test_toy_unet_uses_the_same_parameter_names():
    toy = {n.split(".weight")[0].split(".bias")[0] for n, _ in make_unet().named_parameters()}
    real = {n.split(".weight")[0].split(".bias")[0] for n, _ in sd14_unet("meta").named_parameters()}
    assert toy <= real  # every toy parameter name exists in SD v1.4: masks and presets transfer
