"""The hand-written NMS fallback against torchvision.ops.nms, which `nms` uses where torchvision imports.

Skipped where torchvision is absent or broken (the locked CPU environment); run on a GPU image, where it is
present: `python -m pytest -q -p no:xdist tests/ood_objects/test_nms_torchvision.py` (docs/install.md).
"""

import pytest
import torch

from synthrel.ood_objects.grounded_sam import greedy_nms, nms, torchvision_ops

ops = torchvision_ops()
pytestmark = pytest.mark.skipif(ops is None, reason="torchvision absent or not importable beside this torch")


def kept_rows(boxes, scores, keep):
    return sorted(tuple(boxes[i].tolist()) + (float(scores[i]),) for i in keep.tolist())


def cases():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=gen) * 100
    wh = torch.rand(300, 2, generator=gen) * 40 + 1
    random = torch.cat([xy, xy + wh], 1)
    yield "random, distinct scores", random, torch.randperm(300, generator=gen).float() / 300
    base = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 5],
                         [20, 20, 30, 30], [20, 20, 30, 30]])
    yield "identical boxes, tied scores", base, torch.tensor([0.9, 0.9, 0.9, 0.5, 0.5, 0.3, 0.3])
    # IoU exactly 1/3 ([0,10] vs [5,15]) and 0.5 ([0,10]x[0,5] in [0,10]^2): `>` keeps equality
    yield "IoU at the threshold", base[[0, 3, 4]], torch.tensor([0.9, 0.8, 0.7])
    yield "degenerate boxes", torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 5], [3, 3, 8, 8]]), \
        torch.tensor([0.4, 0.3, 0.2, 0.1])
    yield "empty", torch.zeros(0, 4), torch.zeros(0)


@pytest.mark.parametrize("threshold", [0.0, 1 / 3, 0.5, 0.7, 1.0])
def test_fallback_keeps_what_torchvision_keeps(threshold):
    for name, boxes, scores in cases():
        ref = ops.nms(boxes, scores, threshold)
        ours = greedy_nms(boxes, scores, threshold)
        assert kept_rows(boxes, scores, ours) == kept_rows(boxes, scores, ref), name
        if len(set(scores.tolist())) == len(scores):  # no ties: the same indices in the same order
            assert ours.tolist() == ref.tolist(), name
        assert nms(boxes, scores, threshold).tolist() == ref.tolist(), name
