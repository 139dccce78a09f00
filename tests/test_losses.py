import torch

from pianoapp.losses import info_nce, vicreg


def test_vicreg_prefers_matched_pairs_and_penalises_collapse():
    torch.manual_seed(0)
    za = torch.randn(64, 32)
    matched = vicreg(za, za + 0.01 * torch.randn(64, 32))["loss"]
    unmatched = vicreg(za, torch.randn(64, 32))["loss"]
    collapsed = vicreg(torch.ones(64, 32), torch.ones(64, 32))
    assert matched < unmatched
    assert collapsed["invariance"] == 0 and collapsed["variance"] > 0.9


def test_info_nce_is_low_for_aligned_pairs_and_has_gradients():
    torch.manual_seed(0)
    za = torch.randn(32, 16, requires_grad=True)
    aligned = info_nce(za, za.detach() * 2)["loss"]
    shuffled = info_nce(za, za.detach()[torch.randperm(32)])["loss"]
    assert aligned < shuffled
    aligned.backward()
    assert za.grad is not None and torch.isfinite(za.grad).all()
