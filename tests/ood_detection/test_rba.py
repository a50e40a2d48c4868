"""RbA score and loss on hand-worked values; outlier-exposure fine-tuning of a tiny Mask2Former."""

import numpy as np
import pytest
import torch

from synthrel.conventions import OOD_LABEL_ID
from synthrel.ood_detection.outliers import OutlierMixDataset, collate_outliers, outlier_mask_of, paste_object
from synthrel.ood_detection.rba import (
    TRAINABLE_PREFIXES,
    RbAFineTuner,
    class_scores,
    outlier_hinge_loss,
    rba_predict,
)
from synthrel.tiny.mask2former import build_tiny_mask2former


@pytest.fixture(scope="module")
def tiny_m2f(tmp_path_factory):
    return build_tiny_mask2former(tmp_path_factory.mktemp("models") / "mask2former_tiny")


def test_class_scores_hand_worked():
    # 2 queries, 2 classes + void. Query 0 is sure of class 0, query 1 splits class 1 / void.
    cls = torch.log(torch.tensor([[[1.0, 1e-12, 1e-12], [1e-12, 0.5, 0.5]]]))
    masks = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)  # sigmoid: 0.5 and 0.8808
    class_l = class_scores(cls, masks, (1, 1))[0, :, 0, 0]
    s0, s1 = 1 / (1 + np.exp(0.0)), 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(class_l.numpy(), [s0, 0.5 * s1], atol=1e-6)  # void column dropped


def test_outlier_hinge_loss_hand_worked():
    score = torch.tensor([-1.0, 0.5, 2.0, 4.0, 7.0])
    mask = torch.tensor([0, 0, 1, 1, 255])
    inlier = (0.0 + 0.25) / 2  # relu(s - 0)^2 over ID pixels
    outlier = (9.0 + 1.0) / 2  # relu(5 - s)^2 over OOD pixels
    assert outlier_hinge_loss(score, mask).item() == pytest.approx(0.5 * (inlier + outlier))
    assert outlier_hinge_loss(score, torch.tensor([0, 0, 255, 255, 255])).item() == pytest.approx(inlier)


def test_paste_and_outlier_mask():
    rng = np.random.default_rng(0)
    image, label = np.zeros((20, 30, 3), np.uint8), np.full((20, 30), 7, np.uint8)
    label[0, 0] = 255
    obj, mask = np.full((6, 6, 3), 200, np.uint8), np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    new_image, new_label = paste_object(image, label, obj, mask, rng)
    assert (new_label == OOD_LABEL_ID).sum() == 9 and (new_image[new_label == OOD_LABEL_ID] == 200).all()
    om = outlier_mask_of(new_label)
    assert (om == 1).sum() == 9 and om[0, 0] in (255, 1) and set(np.unique(om)) <= {0, 1, 255}


def _batch(rng, n=2, h=48, w=64):
    labels = rng.integers(0, 4, (n, h, w)).astype(np.uint8)
    labels[:, 10:20, 10:30] = OOD_LABEL_ID
    labels[:, -3:] = 255
    samples = [{"image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "label": lab,
                "outlier_mask": outlier_mask_of(lab)} for lab in labels]
    return collate_outliers(samples)


def test_finetuning_lowers_outlier_loss_and_only_trains_the_mlps(tiny_m2f):
    torch.manual_seed(0)
    module = RbAFineTuner(str(tiny_m2f), lr=1e-2, max_steps=100)
    batch = _batch(np.random.default_rng(0))
    before = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    optimizer = module.configure_optimizers()["optimizer"]
    module.model.train()
    with torch.no_grad():
        start = module.losses(batch)["outlier"].item()
    for _ in range(8):
        optimizer.zero_grad()
        module.losses(batch)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        end = module.losses(batch)["outlier"].item()
    assert end < start
    changed = {k for k, v in module.model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(TRAINABLE_PREFIXES) for k in changed)
    assert any("mask_embedder" in k for k in changed) and any(k.startswith("class_predictor") for k in changed)
    scores, class_l = rba_predict(module.model, np.zeros((1, 40, 50, 3), np.uint8))
    assert scores.shape == (1, 40, 50) and class_l.shape == (1, 19, 40, 50)


def test_outlier_mix_is_deterministic_and_mixes_at_the_rate():
    rng = np.random.default_rng(1)
    inliers = [{"image": np.zeros((8, 8, 3), np.uint8), "label": np.zeros((8, 8), np.uint8), "ood": None}] * 3
    ood = np.zeros((8, 8), np.uint8)
    ood[2:4, 2:4] = 1
    outliers = [{"image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "label": np.ones((8, 8), np.uint8),
                 "ood": ood}]
    ds = OutlierMixDataset(inliers, outliers, mix_prob=0.25, seed=3, num_samples=2000)
    mixed = [ds[i]["mixed"] for i in range(2000)]
    assert 0.2 < np.mean(mixed) < 0.3
    i = int(np.argmax(mixed))
    assert (ds[i]["label"] == OOD_LABEL_ID).sum() == 4 and (ds[i]["outlier_mask"] == 1).sum() == 4
    assert all(np.array_equal(ds[k]["image"], ds[k]["image"]) for k in range(20))


def test_bf16_scoring_rounds_only_the_network(tiny_m2f):
    """`rba.precision=bf16` autocasts the network; the class and anomaly scores stay float32 and move by bf16
    rounding only: sklearn's AUROC of the two score maps against the same OOD square agrees to 0.02."""
    from sklearn.metrics import roc_auc_score

    from synthrel.ood_detection.rba import load_mask2former

    model = load_mask2former(str(tiny_m2f))
    image = np.random.default_rng(0).integers(0, 255, (1, 48, 64, 3), dtype=np.uint8)
    (s32, l32), (s16, l16) = (rba_predict(model, image, autocast_dtype=d) for d in (None, torch.bfloat16))
    assert s32.dtype == s16.dtype == l32.dtype == l16.dtype == torch.float32
    assert not torch.equal(s32, s16)  # the network really ran in bf16
    # class scores are probabilities times sigmoids in [0, 1]: bf16's 8 mantissa bits bound the change
    np.testing.assert_allclose(l16.numpy(), l32.numpy(), atol=0.02)
    ood = np.zeros((48, 64), bool)
    ood[16:32, 20:44] = True
    auroc = [roc_auc_score(ood.ravel(), s[0].double().numpy().ravel()) for s in (s32, s16)]
    assert auroc[1] == pytest.approx(auroc[0], abs=0.02)
