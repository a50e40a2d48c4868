# UPerNet ConvNeXt-B (ImageNet-1k or -21k pretraining; same architecture) on Cityscapes (local training; mmseg ships only ADE20K ConvNeXt configs): 19 classes,
# Cityscapes test scale, slide 769 / stride 513. Building it needs mmpretrain (the backbone is mmpretrain.ConvNeXt).
_base_ = ['mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py']
crop_size = (769, 769)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=(769, 769), stride=(513, 513)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2049, 1025), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
