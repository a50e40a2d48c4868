#!/usr/bin/env bash
# Install synthrel's wheel into a GPU image's own torch environment, offline, and run the demo's first stages, then
# the whole demo (`synthrel +experiment=demo`), on CUDA from empty folders (issue #32; docs/install.md, "GPU line").
#
#   tools/gpu_install_check.sh            # needs dist/synthrel-*.whl and .whl/ (the wheels of tools/gpu_carry.txt)
#
# It installs into $PYTHON's own environment (the image's python3, as a user installs into theirs; the machine is
# fresh for every lease): the image's torch, numpy, ... are used as installed, and the check fails if the
# install replaced torch.
# opencv-python is not carried (the image's opencv-python-headless provides the same cv2), so the wheels go in
# with --no-deps after a full dry-run resolve, and `pip check` may only report that one requirement.
# Env: PYTHON (default python3), WHL (default .whl), STAGES (default [tiny_models,demo_data,train_zoo]), DEVICE
# (default cuda; cpu to try the script on a CPU machine), DEMO_TIMEOUT (seconds for the whole demo, default 420:
# about 90 s on an H100, 4-6 min on 2 CPU cores; 0 skips it), OUT (a folder: the demo's log, stage table and
# summary are copied there).
set -euo pipefail
PYTHON=${PYTHON:-python3}
WHL=${WHL:-.whl}
STAGES=${STAGES:-[tiny_models,demo_data,train_zoo]}
DEVICE=${DEVICE:-cuda}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-420}
WHEEL=$(ls dist/synthrel-*.whl)
WORK=$(mktemp -d)

torch_before=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.__file__)')
echo "image torch: $torch_before"
PIP=("$PYTHON" -m pip --disable-pip-version-check)
BIN=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

echo "== full resolve against the image and the carried wheels (dry run)"
"${PIP[@]}" install --dry-run --no-index --find-links "$WHL" "$WHEEL" 2>&1 | tail -5 || true

echo "== install"
mapfile -t carried < <(find "$WHL" -maxdepth 1 -type f -name "*.whl" 2>/dev/null)
"${PIP[@]}" install -q --no-index --no-deps "${carried[@]}" "$WHEEL"
problems=$("${PIP[@]}" check 2>&1 | grep -v "requires opencv-python, which is not installed" || true)
if [ -n "$problems" ] && [ "$problems" != "No broken requirements found." ]; then
    echo "pip check: $problems"; exit 1
fi

torch_after=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.__file__)')
if [ "$torch_after" != "$torch_before" ]; then
    echo "FAIL: torch changed: $torch_before -> $torch_after"; exit 1
fi
cd "$WORK"   # an empty folder: nothing is read from a checkout (python's '' path entry included)
"$PYTHON" - <<'EOF'
import importlib.metadata as md, sys, sysconfig, cv2, torch, synthrel
from pathlib import Path
if not Path(synthrel.__file__).resolve().is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve()):
    sys.exit(f"FAIL: synthrel imported from {synthrel.__file__}, not from the installed wheel")
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-", "| cv2", cv2.__version__)
print("synthrel", synthrel.__version__, "from", synthrel.__file__)
for name in ["transformers", "diffusers", "huggingface-hub", "numpy", "pandas", "scipy", "hydra-core",
             "mmsegmentation", "mmengine", "mmcv-lite", "torchvision", "torchmetrics", "pytorch-lightning"]:
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} absent")
EOF

export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_MININTERVAL=5
"$BIN/synthrel" --cfg job +experiment=demo > cfg_job.yaml && echo "--cfg job: $(wc -l < cfg_job.yaml) lines"
"$BIN/synthrel" profile=tiny "+stage=$STAGES" device=$DEVICE
ls "$WORK/outputs/tiny"
echo "OK: synthrel installed over torch $torch_after and ran $STAGES on $DEVICE in $WORK"
[ "$DEMO_TIMEOUT" = 0 ] && exit 0

# The whole demo, every stage, in a second empty folder (nothing reused from the run above); the stage table
# (wall time, images/s, GPU peak memory per stage) goes into the run folder.
DEMO=$(mktemp -d)
cd "$DEMO"
echo "== synthrel +experiment=demo device=$DEVICE in $DEMO (timeout ${DEMO_TIMEOUT}s)"
start=$SECONDS
timeout "$DEMO_TIMEOUT" "$BIN/synthrel" +experiment=demo device="$DEVICE" stage_table.enabled=true > "$WORK/demo.log" 2>&1 \
    || { rc=$?; tail -40 "$WORK/demo.log"; echo "FAIL: the demo stopped with exit $rc (124: timeout)"; exit 1; }
run_dir=$(sed -n 's/^synthrel: demo finished; logs and summary in //p' "$WORK/demo.log")
report=$(sed -n 's/^  report\.report: //p' "$WORK/demo.log")
cat "$run_dir/stage_table.md"
if [ -n "${OUT:-}" ]; then cp "$WORK/demo.log" "$run_dir"/stage_table.* "$run_dir/summary.yaml" "$OUT"/; fi  # device runs
[ -s "$report" ] || { echo "FAIL: no report (${report:-not printed})"; exit 1; }
echo "OK: the whole demo ran on $DEVICE in $((SECONDS - start)) s from the installed wheel; report: $report"
