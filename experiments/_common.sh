# Shared settings of the recipes. Override on the command line, e.g.
#   PROFILE=tiny bash experiments/table1.sh           (smoke run on tiny random models and demo data)
#   LAUNCHER=slurm SLURM_PARTITION=gpu bash experiments/table1.sh   (one SLURM array task per sweep job)
set -euo pipefail
PYTHON=${PYTHON:-python}
PROFILE=${PROFILE:-paper}
LAUNCHER=${LAUNCHER:-local}          # local | submitit_local | slurm (synthrel/conf/launcher/)
ZOO=${ZOO:-$([ "$PROFILE" = tiny ] && echo tiny || echo paper40)}
COMMON=(profile="$PROFILE" launcher="$LAUNCHER")
# One evaluate job per model: "[ann_r101],[ann_r50],..." (a Hydra sweep over single-model lists).
CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")/../synthrel/conf" && pwd)"   # the recipes run from any folder
MODELS=$($PYTHON -c "import yaml,sys; print(','.join('[%s]' % k for k in yaml.safe_load(open('$CONF/zoo/$ZOO.yaml'))['models']))")
REAL_SETS="[cityscapes],[acdc_fog],[acdc_night],[acdc_rain],[acdc_snow],[idd]"
# Baseline generators (synthrel/conf/generator/): physics-fog betas, the corruptions of `+generator=hendrycks`, and an
# external generator (EXTERNAL=tsit). On the tiny profile the external row reads the demo physics-fog set as
# if another method had written it, so that its path runs offline.
BETAS=${BETAS:-0.005,0.01,0.02}
HENDRYCKS=${HENDRYCKS:-fog,snow,darken,spatter}
if [ "$PROFILE" = tiny ]; then
  EXTERNAL=${EXTERNAL:-external}; EXTERNAL_DOMAINS=${EXTERNAL_DOMAINS:-fog}
  EXTERNAL_ARGS=(generator.name=external_demo
    'generator.images.fog=${paths.artifacts_dir}/baselines/physics_fog/beta0.01/leftImg8bit'
    'generator.labels=${paths.artifacts_dir}/baselines/physics_fog/beta0.01/gtFine')
else
  EXTERNAL=${EXTERNAL:-}; EXTERNAL_DOMAINS=${EXTERNAL_DOMAINS:-fog,night,rain,snow}; EXTERNAL_ARGS=()
fi
run() { echo "+ $PYTHON -m synthrel.run $*"; $PYTHON -m synthrel.run "$@"; }
