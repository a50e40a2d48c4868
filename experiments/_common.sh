# Shared settings of the recipes. Override on the command line, e.g.
#   PROFILE=tiny bash experiments/table1.sh           (smoke run on tiny random models and demo data)
#   LAUNCHER=slurm SLURM_PARTITION=gpu bash experiments/table1.sh   (one SLURM array task per sweep job)
set -euo pipefail
PYTHON=${PYTHON:-python}
PROFILE=${PROFILE:-paper}
LAUNCHER=${LAUNCHER:-local}          # local | submitit_local | slurm (conf/launcher/)
ZOO=${ZOO:-$([ "$PROFILE" = tiny ] && echo tiny || echo paper40)}
COMMON=(profile="$PROFILE" launcher="$LAUNCHER")
# One evaluate job per model: "[ann_r101],[ann_r50],..." (a Hydra sweep over single-model lists).
CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")/../conf" && pwd)"   # the recipes run from any folder
MODELS=$($PYTHON -c "import yaml,sys; print(','.join('[%s]' % k for k in yaml.safe_load(open('$CONF/zoo/$ZOO.yaml'))['models']))")
REAL_SETS="[cityscapes],[acdc_fog],[acdc_night],[acdc_rain],[acdc_snow],[idd]"
run() { echo "+ $PYTHON -m synthrel.run $*"; $PYTHON -m synthrel.run "$@"; }
