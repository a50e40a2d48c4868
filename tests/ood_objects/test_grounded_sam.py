import numpy as np
import pytest
import torch

from synthrel.errors import WeightsError
from synthrel.ood_objects.grounded_sam import GroundedSam, box_iou, load_pretrained, nms


def test_box_iou_hand_worked():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[1.0, 1, 11, 11], [0, 0, 10, 9], [20, 20, 30, 30]])
    # overlaps 9x9=81 over 100+100-81; 90 over 100; none
    assert torch.allclose(box_iou(a, b), torch.tensor([[81 / 119, 0.9, 0.0]]))


def test_nms_hand_worked():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 9], [20, 20, 30, 30],
                          [20, 20, 30, 25]])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.5, 0.6])
    # by score: 2 (kept), 0 (IoU 0.9 with 2: dropped), 1 (IoU 72/118 with 2: kept), 4 (kept),
    # 3 (IoU 0.5 with 4: kept at threshold 0.8 and 0.5, equality is kept as torchvision's `>`; dropped at 0.4)
    assert nms(boxes, scores, 0.8).tolist() == [2, 1, 4, 3]
    assert nms(boxes, scores, 0.5).tolist() == [2, 4, 3]  # 1 goes: IoU 72/118 = 0.61 with 2
    assert nms(boxes, scores, 0.4).tolist() == [2, 4]


@pytest.fixture(scope="module")
def grounded_sam(tiny_models):
    return GroundedSam.from_pretrained(tiny_models["grounding_dino"], tiny_models["sam"], box_threshold=0.0,
                                       text_threshold=0.0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]


def test_tiny_tokenizer_keeps_bert_base_uncased_special_ids(grounded_sam):
    ids = grounded_sam.dino_processor.tokenizer(GroundedSam.caption("Polar bear"))["input_ids"]
    assert ids[0] == 101 and ids[-2:] == [1012, 102]
    assert 100 not in ids  # no [UNK]: letters and ## pieces cover any lowercase name


def test_detection_is_the_best_box_of_transformers_post_processing(grounded_sam, images):
    """Against transformers' own post-processing: same top score and box (text threshold 0 keeps all)."""
    [detection] = grounded_sam.detect(images[:1], "lion")
    inputs = grounded_sam.dino_processor(images=images[:1], text=["lion."], return_tensors="pt")
    with torch.no_grad():
        outputs = grounded_sam.dino(**inputs)
    [ref] = grounded_sam.dino_processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(64, 64)])
    best = int(ref["scores"].argmax())
    assert detection.score == pytest.approx(float(ref["scores"][best]))
    assert np.allclose(detection.box, ref["boxes"][best].clamp(0, 64).numpy(), atol=1e-4)
    x0, y0, x1, y1 = detection.box
    assert 0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 64


def test_thresholds_above_one_find_nothing(grounded_sam, images):
    strict = GroundedSam(grounded_sam.dino, grounded_sam.dino_processor, grounded_sam.sam,
                         grounded_sam.sam_processor, box_threshold=1.01)
    assert strict.detect(images, "lion") == [None, None]
    strict.box_threshold, strict.text_threshold = 0.0, 1.01
    assert strict.detect(images, "lion") == [None, None]


def test_sam_masks_match_the_unbatched_forward(grounded_sam, images):
    boxes = [(4.0, 8.0, 40.0, 50.0), (0.0, 0.0, 63.0, 63.0)]
    batched = grounded_sam.segment(images, boxes)
    for image, box, seg in zip(images, boxes, batched, strict=True):
        inputs = grounded_sam.sam_processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
        with torch.no_grad():
            out = grounded_sam.sam(**inputs, multimask_output=True)
        masks = grounded_sam.sam_processor.image_processor.post_process_masks(
            out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0][0]
        best = int(out.iou_scores[0, 0].argmax())
        assert seg.mask.shape == (64, 64) and seg.mask.dtype == bool
        assert (seg.mask == masks[best].numpy()).mean() > 0.999


def test_missing_weights_folder_names_the_config_key(tmp_path):
    from transformers import SamModel

    with pytest.raises(WeightsError, match="stages.inpaint.sam"):
        load_pretrained(SamModel, str(tmp_path / "absent"), "stages.inpaint.sam", "SAM model")
