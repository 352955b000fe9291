"""The two pieces of training that decide where the heat map points: the heat-placement loss and the
augmentation that moves each lesion mask with its image."""

from __future__ import annotations


def test_heat_loss_is_low_when_the_map_peaks_on_the_mask_and_high_elsewhere(torch_available: None) -> None:
    import torch

    from training.fit import heat_loss

    features = torch.zeros(2, 1, 4, 4)
    features[0, 0, 0, 0] = 10.0  # slice 0: the map peaks on the lesion's cell
    features[1, 0, 3, 3] = 10.0  # slice 1: the map peaks far from it
    masks = torch.zeros(2, 64, 64)
    masks[:, 2:10, 2:10] = 1     # the lesion lies in cell (0, 0) of the 4 x 4 grid
    weights = torch.ones(1)
    on = heat_loss(features[:1], weights, masks[:1])
    off = heat_loss(features[1:], weights, masks[1:])
    assert float(on) < 0.01 and float(off) > 5.0
    assert float(heat_loss(features, weights, masks)) == float((on + off) / 2)


def test_heat_loss_ignores_slices_without_a_mask_and_has_gradients(torch_available: None) -> None:
    import torch

    from training.fit import heat_loss

    features = torch.randn(3, 5, 4, 4, requires_grad=True)
    weights = torch.randn(5)
    assert float(heat_loss(features, weights, torch.zeros(3, 64, 64))) == 0.0
    masks = torch.zeros(3, 64, 64)
    masks[1, 40:50, 40:50] = 1
    loss = heat_loss(features, weights, masks)
    loss.backward()
    assert features.grad is not None
    assert float(features.grad[[0, 2]].abs().sum()) == 0.0 and float(features.grad[1].abs().sum()) > 0


def test_augmentation_moves_the_mask_with_the_image(torch_available: None) -> None:
    import torch

    from training.augment import Augmenter
    from training.specs import CHEST_CT

    pre = CHEST_CT.preprocess
    mean = torch.tensor(pre.normalize.mean).view(1, -1, 1, 1)
    std = torch.tensor(pre.normalize.std).view(1, -1, 1, 1)
    unit = torch.zeros(8, 3, 64, 64)
    masks = torch.zeros(8, 64, 64)
    for i in range(8):  # a bright square at a different place on each slice, and its mask
        y, x = 4 + 5 * i, 40 - 4 * i
        unit[i, :, y:y + 12, x:x + 12] = 1.0
        masks[i, y:y + 12, x:x + 12] = 1.0
    # No intensity changes, so that brightness shows where the square went.
    augment = Augmenter(pre, torch.Generator().manual_seed(3), max_gain=0, max_offset=0, max_noise=0,
                        kernel_probability=0)
    moved, moved_masks = augment((unit - mean) / std, masks)
    assert moved_masks is not None
    bright = ((moved * std + mean)[:, 0] > 0.5).float()
    for i in range(8):
        overlap = float((bright[i] * moved_masks[i]).sum() / moved_masks[i].sum())
        assert moved_masks[i].sum() > 50 and overlap > 0.85
    assert not torch.equal(moved_masks, masks)  # the draw did move some of them
    _, none = augment((unit - mean) / std)
    assert none is None


def test_hard_negatives_are_the_pools_highest_scored_slices_from_the_second_epoch(torch_available: None) -> None:
    """Epoch 1 (and a spec without hard negatives) draws exactly as uniform sampling always did, so
    the shipped models rebuild byte for byte; later epochs take the model's top-scored pool slices."""
    from dataclasses import replace

    import numpy as np
    import torch

    from training.fit import lesion_free_draw
    from training.specs import CHEST_CT

    class Brightness(torch.nn.Module):
        """Scores a slice by its mean intensity: the brighter, the more lesion-like."""

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-m, m], dim=1), x

    planes = np.repeat(np.arange(200, dtype=np.uint8)[:, None, None, None], 3, axis=1) * np.ones((1, 1, 4, 4), np.uint8)
    clear = np.arange(0, 200, 2)  # 100 lesion-free slices; slice i has brightness i
    hard = replace(CHEST_CT, hard_negatives=0.5)
    first = lesion_free_draw(Brightness(), planes, clear, 20, hard, np.random.default_rng(1), epoch=1)  # type: ignore[arg-type]
    plain = lesion_free_draw(Brightness(), planes, clear, 20, CHEST_CT, np.random.default_rng(1), epoch=5)  # type: ignore[arg-type]
    expected = np.random.default_rng(1).choice(clear, 20, replace=False)
    assert np.array_equal(first, expected) and np.array_equal(plain, expected)

    rng = np.random.default_rng(2)
    drawn = lesion_free_draw(Brightness(), planes, clear, 20, hard, rng, epoch=2)  # type: ignore[arg-type]
    replay = np.random.default_rng(2)
    replay.choice(clear, 10, replace=False)
    pool = replay.choice(clear, 40, replace=False)
    assert len(drawn) == 20 and set(drawn) <= set(clear.tolist())
    assert sorted(drawn[10:].tolist()) == sorted(pool)[-10:]


def test_level_matched_negatives_follow_the_lesions_levels_and_keep_every_level(torch_available: None) -> None:
    """Fully matched, the lesion-free draws sit at the lesions' levels in the lesions' proportions;
    with a uniform share every lesion-free slice, the apex and the base too, can still be drawn."""
    import numpy as np

    from training.fit import level_matched, levels

    class Series:  # what ``levels`` reads of a SeriesExamples
        def __init__(self, index: list[int]) -> None:
            self.index = np.array(index)

    level = levels([Series([5, 3, 4, 0, 1, 2, 6, 7, 8, 9]), Series([0, 1])], bins=5)  # slice order, not file order
    assert level.tolist() == [2, 1, 2, 0, 0, 1, 3, 3, 4, 4, 0, 4]
    labels = np.array([1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0])  # one lesion slice at each of levels 2, 3, 4
    clear_level = level[labels == 0]
    full = level_matched(level, labels, 1.0)
    by_level = {int(v): float(full[clear_level == v].sum()) for v in set(clear_level.tolist())}
    assert by_level[0] == by_level[1] == 0.0
    assert all(abs(by_level[v] - 1 / 3) < 1e-12 for v in (2, 3, 4))
    mixed = level_matched(level, labels, 0.75)
    assert abs(mixed.sum() - 1) < 1e-12 and (mixed > 0).all()
    assert np.allclose(level_matched(level, np.where(labels == 1, 0, labels), 0.75), 1 / 12)  # no lesion: uniform
