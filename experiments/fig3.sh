#!/usr/bin/env bash
# Fig. 3: scatter of per-model mIoU, synthetic vs real, one panel per domain, fit line, r and rho in titles.
# Needs the evaluations of table1.sh (steps 1-3); this only re-runs the analysis.
source "$(dirname "$0")/_common.sh"
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=fig3 stages.correlate.metrics=[mIoU] \
    stages.correlate.class_metrics=[] stages.correlate.generators=[sd15,sdxl,cityscapes]
# -> outputs/artifacts/analysis/fig3/fig3_mIoU_{sd15,sdxl,cityscapes}.{png,pdf}
