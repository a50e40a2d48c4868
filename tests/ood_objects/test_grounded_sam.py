import numpy as np
import pytest
import torch

from synthrel.errors import ConfigError, WeightsError
from synthrel.ood_objects import grounded_sam as grounded_sam_module
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


@pytest.fixture(scope="module")
def by_precision(tiny_models):
    """fp32 and bf16 Grounded-SAM sharing one tiny model, made decisive as a trained one.

    Random Grounding DINO weights make the best box a coin toss under any rounding change: its logits (~30)
    saturate the sigmoid, so the best box is a tie-break, and it pairs random learned query embeddings with the
    encoder's proposals by rank, so bf16 reordering near-tied proposal scores (gaps ~0.03, bf16 error ~0.2)
    changes every query. A trained model's scores stay below 1 and its query embeddings are interchangeable:
    here the class logits are scaled down 8x and the query embeddings zeroed.
    """
    fp32 = GroundedSam.from_pretrained(tiny_models["grounding_dino"], tiny_models["sam"], box_threshold=0.0,
                                       text_threshold=0.0)
    with torch.no_grad():
        fp32.dino.model.query_position_embeddings.weight.zero_()
    for class_head in fp32.dino.class_embed:
        class_head.register_forward_hook(lambda module, args, logits: logits / 8)
    bf16 = GroundedSam(fp32.dino, fp32.dino_processor, fp32.sam, fp32.sam_processor, box_threshold=0.0,
                       text_threshold=0.0, precision="bf16")
    return fp32, bf16


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_bf16_detections_match_fp32(by_precision, images):
    """bf16 keeps ~3 significant digits: the same best box (within 1 px of 64; measured: identical) and a score
    within 0.01 of fp32's (measured: within 0.0013; fp32's top two scores are 0.0048 or more apart)."""
    fp32, bf16 = by_precision
    for name in ("lion", "polar bear"):
        for ref, fast in zip(fp32.detect(images, name), bf16.detect(images, name), strict=True):
            assert np.allclose(fast.box, ref.box, atol=1.0)
            assert fast.score == pytest.approx(ref.score, abs=0.01)


def test_bf16_masks_match_fp32(by_precision, images):
    """The same chosen mask, its pixels agreeing to IoU 0.9 (measured 0.97 and 1.0: bf16 moves the edge where the
    tiny SAM's mask logits cross zero) and its predicted IoU within 0.01 (measured 4e-6). Both need SAM's positional
    encodings in fp32 (keep_positional_encodings_fp32): in bf16 the masks' IoU fell to 0.26 on some boxes."""
    fp32, bf16 = by_precision
    boxes = [(4.0, 8.0, 40.0, 50.0), (0.0, 0.0, 63.0, 63.0)]
    for ref, fast in zip(fp32.segment(images, boxes), bf16.segment(images, boxes), strict=True):
        assert iou(fast.mask, ref.mask) >= 0.9
        assert fast.score == pytest.approx(ref.score, abs=0.01)


def test_bf16_runs_the_models_in_bf16_and_decodes_in_float32(by_precision, images, monkeypatch):
    """The models' linear layers run in the named precision; NMS and the mask post-processing get float32."""
    decoded = []

    def spy_nms(boxes, scores, iou_threshold):
        decoded.extend([boxes.dtype, scores.dtype])
        return nms(boxes, scores, iou_threshold)

    image_processor = by_precision[0].sam_processor.image_processor
    post_process_masks = image_processor.post_process_masks

    def spy_post_process_masks(masks, *args, **kwargs):
        decoded.append(masks.dtype)
        return post_process_masks(masks, *args, **kwargs)

    monkeypatch.setattr(grounded_sam_module, "nms", spy_nms)
    monkeypatch.setattr(image_processor, "post_process_masks", spy_post_process_masks)
    for detector, dtype in zip(by_precision, (torch.float32, torch.bfloat16), strict=True):
        linear = set()
        hooks = [m.register_forward_hook(lambda module, args, out, seen=linear: seen.add(out.dtype))
                 for model in (detector.dino, detector.sam) for m in model.modules() if isinstance(m, torch.nn.Linear)]
        try:
            [detection] = detector.detect(images[:1], "lion")
            [segmentation] = detector.segment(images[:1], [detection.box])
        finally:
            for hook in hooks:
                hook.remove()
        assert linear == {dtype}
        assert isinstance(detection.score, float) and isinstance(segmentation.score, float)
        assert segmentation.mask.dtype == bool
    assert len(decoded) == 6 and set(decoded) == {torch.float32}


def test_unknown_precision_names_the_key(tiny_models, by_precision):
    from synthrel.ood_objects.job import InpaintJob
    from synthrel.schemas import check_settings

    fp32 = by_precision[0]
    message = r"`stages\.inpaint\.detector_precision` is 'fp16'; valid: fp32, bf16"
    with pytest.raises(ConfigError, match=message):
        GroundedSam(fp32.dino, fp32.dino_processor, fp32.sam, fp32.sam_processor, precision="fp16")
    with pytest.raises(ConfigError, match=message):
        GroundedSam.from_pretrained(tiny_models["grounding_dino"], tiny_models["sam"], precision="fp16")
    with pytest.raises(ConfigError, match=message):
        InpaintJob(source=None, out_dir="unused", all_objects=["lion"], samples_per_object=1,
                   detector_precision="fp16")
    assert ("`stages.inpaint.detector_precision` is 'fp16' (str); expected one of 'fp32', 'bf16'"
            in check_settings(InpaintJob, {"detector_precision": "fp16"}, "stages.inpaint"))
