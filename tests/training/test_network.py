"""Partial fine-tuning: the frozen stem and early blocks keep their weights and BatchNorm statistics."""

from __future__ import annotations

import pytest


def test_frozen_blocks_do_not_change_while_the_rest_trains(torch_available: None) -> None:
    import torch

    from training.network import LiteClassifier

    torch.manual_seed(0)
    model = LiteClassifier(4, 64, pretrained=False)
    model.freeze_early(3)
    model.train()
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("backbone._conv_stem", "backbone._bn0", "backbone._blocks.0.",
                               "backbone._blocks.1.", "backbone._blocks.2."))}
    trained = model.backbone._blocks[3]._project_conv.weight.detach().clone()
    assert frozen and not model.backbone._bn0.training and model.backbone._blocks[3].training
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    logits, _ = model(torch.randn(4, 3, 64, 64))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    optimiser.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # weights and running stats
    assert not torch.equal(model.backbone._blocks[3]._project_conv.weight, trained)


def test_no_frozen_blocks_trains_everything(torch_available: None) -> None:
    from training.network import LiteClassifier

    model = LiteClassifier(4, 64, pretrained=False)
    model.freeze_early(0)
    assert all(p.requires_grad for p in model.parameters())


def test_stride_16_halves_the_feature_cell_and_keeps_the_pretrained_weights(torch_available: None) -> None:
    import torch

    from training.network import LiteClassifier

    coarse = LiteClassifier(2, 64, pretrained=False, feature_stride=32).eval()
    fine = LiteClassifier(2, 64, pretrained=False, feature_stride=16).eval()
    fine.load_state_dict(coarse.state_dict())  # same parameters, only a stride differs
    with torch.inference_mode():
        _, coarse_features = coarse(torch.zeros(1, 3, 64, 64))
        _, fine_features = fine(torch.zeros(1, 3, 64, 64))
    assert (coarse.feature_stride, fine.feature_stride) == (32, 16)
    assert coarse_features.shape[-2:] == (2, 2) and fine_features.shape[-2:] == (4, 4)


def test_an_unsupported_stride_is_refused(torch_available: None) -> None:
    from training.network import LiteClassifier

    with pytest.raises(ValueError, match="8, 16 or 32"):
        LiteClassifier(2, 64, pretrained=False, feature_stride=4)
    with pytest.raises(ValueError, match="stride 8 is fused only"):
        LiteClassifier(2, 64, pretrained=False, feature_stride=8)
    with pytest.raises(ValueError, match="32 neither"):
        LiteClassifier(2, 64, pretrained=False, feature_stride=32, fused=True)


@pytest.mark.parametrize(("stride", "projections"), [(16, ("fuse",)), (8, ("fuse", "fuse_fine"))])
def test_a_fused_grid_starts_as_the_stride_32_model_and_stays_a_cam(
        torch_available: None, stride: int, projections: tuple[str, ...]) -> None:
    import torch

    from training.network import LiteClassifier

    torch.manual_seed(0)
    coarse = LiteClassifier(2, 64, pretrained=False).eval()
    fused = LiteClassifier(2, 64, pretrained=False, feature_stride=stride, fused=True).eval()
    fused.load_state_dict(coarse.state_dict(), strict=False)  # all but the new projections
    image = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        coarse_logits, _ = coarse(image)
        fused_logits, fused_features = fused(image)
    assert fused.feature_stride == stride and fused_features.shape[-2:] == (64 // stride, 64 // stride)
    torch.testing.assert_close(fused_logits, coarse_logits)  # the projections start at zero
    with torch.no_grad():
        for name in projections:
            getattr(fused, name).weight.normal_()  # once trained, the finer features count
        logits, features = fused(image)
    head = fused.classifier
    torch.testing.assert_close(logits, features.mean(dim=(2, 3)) @ head.weight.T + head.bias)
    assert not torch.allclose(logits, coarse_logits)
