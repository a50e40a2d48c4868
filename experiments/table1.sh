#!/usr/bin/env bash
# Table 1: PCC over the zoo between mIoU on generated data (SD1.5, SDXL; Cityscapes as baseline) and
# mIoU on the real shifted data (ACDC fog/night/rain/snow, IDD for india). Also gives Fig. 3 and Table 5.
# Real data: each set's relis test split (cityscapes_test, acdc_<condition>_test, idd_test); REAL_SPLIT=all: the
# whole sets (README, "Protocol splits").
source "$(dirname "$0")/_common.sh"

# 1. Synthetic sets: one job per backbone x domain (needs captions + ControlNets: +experiment=train_controlnet).
run -m "${COMMON[@]}" +stage=[generate] task_name=table1_generate backbone=sd15,sdxl domain=fog,night,rain,snow,india

# 2. Zoo on the real sets (their test splits, REAL_SETS in _common.sh): models x datasets.
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table1_eval_real "stages.evaluate.models=$MODELS" \
    "stages.evaluate.datasets=$REAL_SETS"

# 3. Zoo on the synthetic sets: models x backbones x domains.
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table1_eval_synthetic "stages.evaluate.models=$MODELS" \
    stages.evaluate.datasets=[synthetic] backbone=sd15,sdxl domain=fog,night,rain,snow,india

# 3b. Baseline generators (Table 1's comparison rows, synthrel/conf/generator/): physics-based fog (Koschmieder over
#     Cityscapes stereo depth, one row per beta), Hendrycks' corruptions matched to each domain, and an external
#     generator's images (EXTERNAL=tsit TSIT_DIR=<folders>: synthrel/conf/generator/tsit.yaml).
run "${COMMON[@]}" +stage=[physics_fog] task_name=table1_physics_fog
run "${COMMON[@]}" +stage=[corrupt] task_name=table1_corrupt "stages.corrupt.corruptions=[$HENDRYCKS]"
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table1_eval_baselines "stages.evaluate.models=$MODELS" \
    stages.evaluate.datasets=[baseline] +generator=physics_fog domain=fog "generator.beta=$BETAS"
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table1_eval_baselines "stages.evaluate.models=$MODELS" \
    stages.evaluate.datasets=[baseline] +generator=hendrycks domain=fog,night,rain,snow
if [ -n "$EXTERNAL" ]; then
  run -m "${COMMON[@]}" +stage=[evaluate] task_name=table1_eval_baselines "stages.evaluate.models=$MODELS" \
      stages.evaluate.datasets=[baseline] "+generator=$EXTERNAL" "${EXTERNAL_ARGS[@]}" "domain=$EXTERNAL_DOMAINS"
else echo "external generator row: not run (set EXTERNAL=tsit and TSIT_DIR, see synthrel/conf/generator/tsit.yaml)"; fi

# 4. Correlate (Pearson headline, Spearman/Kendall, bootstrap CIs) and write the report.
#    -> outputs/artifacts/analysis/correlation/table1_mIoU.{csv,md,tex}, table1_mIoU_ci.md, report.{md,html}
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation stages.correlate.metrics=[mIoU]
# The same from sweep folders only (no shared results root):
#   python -m synthrel.run +experiment=correlation stages.correlate.results_root=null \
#       'stages.correlate.sweep_dirs=[outputs/logs/multiruns/<date of step 2>,outputs/logs/multiruns/<date of step 3>]'
# or one table: python -m synthrel.analysis.aggregate outputs/logs/multiruns/<date> --out table1_results.parquet
# (each sweep prints its folder at the end of every job: "sweep folder: ...")
