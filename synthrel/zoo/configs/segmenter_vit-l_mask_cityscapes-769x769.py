# Segmenter ViT-L/16 mask head on Cityscapes (the paper's local training; mmseg ships only ADE20K Segmenter
# configs): the ADE20K model with 19 classes, Cityscapes test scale and slide 769 / stride 513.
_base_ = ['mmseg::segmenter/segmenter_vit-l_mask_8xb1-160k_ade20k-512x512.py']
crop_size = (769, 769)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=(768, 768)),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=(769, 769), stride=(513, 513)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2049, 1025), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
