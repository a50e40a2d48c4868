"""The engine's loader batches (synthrel.evaluation.engine._Collate): grouped by size, equal to numpy's stack, and
built in shared memory inside loader workers (no copy to cross to the main process)."""

import numpy as np
import pytest
import torch

from synthrel.evaluation.engine import _Collate, calibration_picks


class _Samples(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


class _SharedInWorker(_Collate):
    """_Collate noting, in the worker, whether each stacked tensor is already in shared memory."""

    def __call__(self, batch):
        groups = super().__call__(batch)
        for group in groups:
            group.update({f"{field}_shared": group[field].is_shared() for field in ("image", "label", "ood")})
        return groups


@pytest.mark.filterwarnings("error")
def test_collate_groups_by_size_stacks_like_numpy_and_uses_shared_memory_in_workers():
    rng = np.random.default_rng(0)
    sizes = [(6, 8), (6, 8), (4, 8), (6, 8)]
    samples = [(i, {"id": f"s{i}", "image": rng.integers(0, 256, (*hw, 3), dtype=np.uint8),
                    "label": rng.integers(0, 19, hw, dtype=np.uint8), "ood": rng.integers(0, 2, hw, dtype=np.uint8)})
               for i, hw in enumerate(sizes)]
    samples[1][1]["image"] = samples[1][1]["image"][..., ::-1]  # a view with a negative stride (BGR -> RGB)
    samples[3][1]["label"].flags.writeable = False  # read-only, as PIL's arrays
    main = _Collate(seed=0, calib_pixels=5)(samples)
    [worker] = list(torch.utils.data.DataLoader(_Samples(samples), batch_size=4, num_workers=1,
                                                collate_fn=_SharedInWorker(seed=0, calib_pixels=5)))
    assert all(g[f"{field}_shared"] for g in worker for field in ("image", "label", "ood"))  # stacked into shm
    assert not any(g[field].is_shared() for g in main for field in ("image", "label", "ood"))  # main: plain memory
    for groups in (main, worker):
        assert [g["indices"] for g in groups] == [[0, 1, 3], [2]] and [g["ids"] for g in groups][1] == ["s2"]
        for group in groups:
            members = [samples[i][1] for i in group["indices"]]
            for field in ("image", "label", "ood"):
                np.testing.assert_array_equal(group[field].numpy(), np.stack([m[field] for m in members]))
                assert group[field].dtype == torch.uint8
            h, w = members[0]["label"].shape
            np.testing.assert_array_equal(group["picks"].numpy(), calibration_picks(0, group["indices"], h, w, 5))
