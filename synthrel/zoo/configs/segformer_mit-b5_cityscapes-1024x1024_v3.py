# SegFormer-B5 re-trained on Cityscapes (de Jorge et al.'s local 80k training "v3"; no public checkpoint):
# the mmseg SegFormer-B5 Cityscapes model, evaluated in whole mode as in relis' config.
_base_ = ['mmseg::segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py']
model = dict(test_cfg=dict(_delete_=True, mode='whole'))
