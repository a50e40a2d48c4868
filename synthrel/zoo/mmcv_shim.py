"""Make mmsegmentation 1.2.2 importable on mmcv-lite (no compiled `mmcv._ext`).

mmseg imports `mmcv.ops` at module level; with mmcv-lite, `import mmcv.ops` fails on `mmcv._ext`. `install()`
registers a light `mmcv.ops` package exposing the pure-PyTorch ops mmseg needs: `point_sample` (mask heads)
and `CrissCrossAttention` (CCNet's CCHead; pure PyTorch since mmcv 2.0). Any other op raises
ModuleNotFoundError, which mmseg's guarded imports of optional heads (PSANet, PointRend) expect. With full
mmcv installed this does nothing. Adapted from shared/bench/mmcv_lite_shim.py.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def install() -> bool:
    """Install the light `mmcv.ops` if needed; True when the shim is active."""
    try:
        importlib.import_module("mmcv._ext")
        return False  # full mmcv: nothing to do
    except ImportError:
        pass
    ops = sys.modules.get("mmcv.ops")
    if ops is not None and hasattr(ops, "CrissCrossAttention"):
        return True
    import mmcv

    ops = types.ModuleType("mmcv.ops")
    ops.__path__ = [str(Path(mmcv.__file__).parent / "ops")]  # submodules stay importable
    ops.__package__ = "mmcv.ops"
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
    point_sample = importlib.import_module("mmcv.ops.point_sample")
    ops.point_sample = point_sample.point_sample
    ops.bilinear_grid_sample = point_sample.bilinear_grid_sample
    ops.CrissCrossAttention = importlib.import_module("mmcv.ops.cc_attention").CrissCrossAttention

    def sigmoid_focal_loss(*args, **kwargs):
        raise NotImplementedError("mmcv.ops.sigmoid_focal_loss needs full mmcv (compiled ops)")

    ops.sigmoid_focal_loss = sigmoid_focal_loss

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ModuleNotFoundError(f"mmcv.ops.{name} needs full mmcv (compiled ops); mmcv-lite is installed")

    ops.__getattr__ = __getattr__
    return True


def import_mmpretrain_models() -> None:
    """Import `mmpretrain.models` (the ConvNeXt backbones of the zoo) where torchvision is absent.

    mmpretrain imports `torchvision.ops.boxes` in a visual-grounding metric that no backbone uses, and torchvision
    cannot be installed beside the CPU build of torch used here. Empty placeholder modules stand in during this
    one import and are removed right after, so every other library still finds torchvision absent.
    """
    import importlib.util

    if "mmpretrain.models" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        importlib.import_module("mmpretrain.models")
        return
    names = ("torchvision", "torchvision.ops", "torchvision.ops.boxes")
    placeholders = {name: types.ModuleType(name) for name in names}
    placeholders["torchvision"].ops = placeholders["torchvision.ops"]
    placeholders["torchvision.ops"].boxes = placeholders["torchvision.ops.boxes"]
    sys.modules.update(placeholders)
    try:
        importlib.import_module("mmpretrain.models")
    finally:
        for name in names:
            if sys.modules.get(name) is placeholders[name]:
                del sys.modules[name]
