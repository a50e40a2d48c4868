#!/usr/bin/env bash
# Fig. 6: relative ECE improvement per model (ordered by robustness = real mIoU) when TS is fitted on
# synthetic data (per-class TS) vs on real shifted data (one scalar per model). Real temperatures are fitted
# on the domain's relis calibration split (acdc_<condition>_calib, idd_calib) and every temperature is tested
# on its test split (acdc_<condition>_test, idd_test); synthrel/conf/dataset/protocol_splits.yaml.
source "$(dirname "$0")/_common.sh"
run -m "${COMMON[@]}" +experiment=calibration task_name=fig6_calibrate domain=fog,night,rain,snow,india \
    "stages.calibrate.methods=[global,per_class]" \
    '+stages.calibrate.calibration_sets.real=[${synthrel.real:calib}]'
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=fig6 stages.correlate.metrics=[ece_paper] \
    stages.correlate.class_metrics=[] \
    'stages.correlate.calibration_root=${paths.artifacts_dir}/calibration/${zoo.name}/fig6_calibrate'
# -> outputs/artifacts/analysis/fig6/fig6_ece_improvement.{png,pdf} (one panel per domain, bars per
#    calibration set x method) and table3_calibration_success.*
