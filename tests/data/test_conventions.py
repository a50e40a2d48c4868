"""Label conventions against independent references: cityscapesscripts' table and the IDD table by hand."""

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels

from synthrel import conventions as C


@pytest.mark.parametrize("ref", [lab for lab in cs_labels.labels if lab.id >= 0], ids=lambda lab: lab.name)
def test_every_cityscapes_label_id_maps_like_the_official_table(ref):
    expected = 255 if ref.trainId in (-1, 255) else ref.trainId
    assert C.LABEL_TO_TRAIN[ref.id] == expected
    assert C.label_ids_to_train_ids(np.array([[ref.id]]))[0, 0] == expected
    if expected != 255:
        assert C.CLASS_NAMES[expected] == ref.name
        assert tuple(C.PALETTE[expected]) == ref.color
        assert C.TRAIN_TO_LABEL[expected] == ref.id


def test_ids_outside_the_table_are_ignored():
    assert set(C.LABEL_TO_TRAIN[34:].tolist()) == {255}
    assert C.LABEL_TO_TRAIN[C.OOD_LABEL_ID] == 255


# IDD level3Ids (IDD toolkit labels) -> the Cityscapes class they stand for, by hand from the spec table.
IDD_BY_HAND = {0: "road", 2: "sidewalk", 22: "building", 14: "wall", 15: "fence", 20: "pole", 19: "traffic light",
               18: "traffic sign", 24: "vegetation", 25: "sky", 4: "person", 5: "rider", 9: "car", 10: "truck",
               11: "bus", 6: "motorcycle", 7: "bicycle"}


def test_idd_level3_mapping_matches_the_table():
    for level3 in range(256):
        train = C.IDD_LEVEL3_TO_TRAIN[level3]
        if level3 in IDD_BY_HAND:
            assert C.CLASS_NAMES[train] == IDD_BY_HAND[level3], level3
        else:
            assert train == 255, level3
    reached = set(C.IDD_LEVEL3_TO_TRAIN.tolist()) - {255}
    assert sorted(set(range(19)) - reached) == sorted(C.IDD_ABSENT_TRAIN_IDS)
    assert [C.CLASS_NAMES[i] for i in C.IDD_ABSENT_TRAIN_IDS] == ["terrain", "train"]
