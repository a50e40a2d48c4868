# Shared settings of the recipes. Override on the command line, e.g.
#   PROFILE=tiny bash experiments/table1.sh           (smoke run on tiny random models and demo data)
#   LAUNCHER=slurm SLURM_PARTITION=gpu bash experiments/table1.sh   (one SLURM array task per sweep job)
set -euo pipefail
PYTHON=${PYTHON:-python}
PROFILE=${PROFILE:-paper}
LAUNCHER=${LAUNCHER:-local}          # local | submitit_local | slurm (synthrel/conf/launcher/)
ZOO=${ZOO:-$([ "$PROFILE" = tiny ] && echo tiny || echo paper40)}
# Real data of every reported result: test (each real set's relis test split <set>_test, the paper's protocol) |
# all (the whole sets; the report's protocol box names it). README, "Protocol splits".
REAL_SPLIT=${REAL_SPLIT:-test}
COMMON=(profile="$PROFILE" launcher="$LAUNCHER" real_split="$REAL_SPLIT")
# One evaluate job per model: "[ann_r101],[ann_r50],..." (a Hydra sweep over single-model lists).
CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")/../synthrel/conf" && pwd)"   # the recipes run from any folder
MODELS=$($PYTHON -c "import yaml,sys; print(','.join('[%s]' % k for k in yaml.safe_load(open('$CONF/zoo/$ZOO.yaml'))['models']))")
REAL_SUFFIX=$([ "$REAL_SPLIT" = all ] || echo _test)   # one evaluate job per real set, as REAL_SPLIT reports it
REAL_SETS="[cityscapes$REAL_SUFFIX],[acdc_fog$REAL_SUFFIX],[acdc_night$REAL_SUFFIX],[acdc_rain$REAL_SUFFIX],[acdc_snow$REAL_SUFFIX],[idd$REAL_SUFFIX]"
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
