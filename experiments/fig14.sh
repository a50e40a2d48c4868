#!/usr/bin/env bash
# Fig. 14 (supplementary B): (a) per-class TS vs standard TS, both fitted on synthetic data;
# (b) standard TS fitted on Cityscapes vs on synthetic data. Bars per model, ordered by robustness.
# Cityscapes temperatures are fitted on its relis calibration split (munster + lindau) and everything is
# tested on the real test split of each domain (synthrel/conf/dataset/protocol_splits.yaml).
source "$(dirname "$0")/_common.sh"
# (a) synthetic set, both methods
run -m "${COMMON[@]}" +experiment=calibration task_name=fig14a_calibrate domain=fog,night,rain,snow,india \
    "stages.calibrate.methods=[global,per_class]" \
    '~stages.calibrate.calibration_sets.cityscapes'
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=fig14a stages.correlate.metrics=[ece_paper] \
    stages.correlate.class_metrics=[] \
    'stages.correlate.calibration_root=${paths.artifacts_dir}/calibration/${zoo.name}/fig14a_calibrate'
# (b) Cityscapes (cityscapes_calib) vs synthetic, standard TS (the calibrate stage's default sets)
run -m "${COMMON[@]}" +experiment=calibration task_name=fig14b_calibrate domain=fog,night,rain,snow,india \
    stages.calibrate.methods=[global]
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=fig14b stages.correlate.metrics=[ece_paper] \
    stages.correlate.class_metrics=[] \
    'stages.correlate.calibration_root=${paths.artifacts_dir}/calibration/${zoo.name}/fig14b_calibrate'
# -> outputs/artifacts/analysis/fig14{a,b}/fig6_ece_improvement.{png,pdf} (outputs/tiny/artifacts/... with PROFILE=tiny),
#    each from its own calibrate sweep (outputs/artifacts/calibration/<zoo>/fig14{a,b}_calibrate)
