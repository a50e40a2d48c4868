#!/usr/bin/env bash
# Table 3 (supplementary B): share of models whose ECE improves with TS fitted on domain-specific synthetic
# data, on "all domains" and on "all domains but rain" (profile.samples_per_domain_all = 64 images per
# prompt), tested on the real test split of each shift. Per-class TS as in the paper (one temperature per
# predicted class, applied per channel as the official code does: stages.calibrate.per_class_rule); add
# `global` to methods for standard TS. The domain-specific synthetic sets come from table1.sh.
source "$(dirname "$0")/_common.sh"

# 1. The all-domains calibration sets, and the zoo on them (keeps the calibration pixel samples).
run -m "${COMMON[@]}" +stage=[generate] task_name=table3_generate domain=all_domains,all_domains_but_rain
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table3_eval "stages.evaluate.models=$MODELS" \
    stages.evaluate.datasets=[synthetic] domain=all_domains,all_domains_but_rain

# 2. Fit TS on each calibration set, test on the real counterpart of each shift: one job per shift.
run -m "${COMMON[@]}" +experiment=calibration task_name=table3_calibrate domain=fog,night,rain,snow,india \
    "stages.calibrate.methods=[per_class]" \
    '+stages.calibrate.calibration_sets.all_domains=[synthetic_${backbone.name}_all_domains]' \
    '+stages.calibrate.calibration_sets.all_domains_but_rain=[synthetic_${backbone.name}_all_domains_but_rain]'

# 3. Table 3 layout: calibration set x shift, % of models with ECE_TS < ECE_raw.
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=table3 stages.correlate.metrics=[ece_paper] \
    stages.correlate.class_metrics=[] \
    'stages.correlate.calibration_root=${paths.artifacts_dir}/calibration/${zoo.name}/table3_calibrate'
# -> outputs/artifacts/analysis/table3/table3_calibration_success.{csv,md,tex}, fig6_ece_improvement.{png,pdf}
