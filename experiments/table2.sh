#!/usr/bin/env bash
# Table 2 / S10: OOD detection. The zoo is scored (MSP, max logit, entropy; AUROC, AP, FPR95) on the
# synthetic OOD-object set and on the real OOD benchmarks, and the per-model scores are correlated
# (synthetic OOD objects vs Road Anomaly). The RbA fine-tuning rows of Table 2 need RbA (detectron2), which
# is outside this framework (paper_spec S11).
source "$(dirname "$0")/_common.sh"

# 1. Synthetic OOD objects (inpainting + Grounded-SAM masks + refinement), one job per backbone.
run -m "${COMMON[@]}" +experiment=ood_objects task_name=table2_ood_objects backbone=sd15 \
    "stages.evaluate.models=$MODELS"
# 2. The zoo on the real OOD benchmarks: models x benchmarks.
run -m "${COMMON[@]}" +experiment=ood_detection task_name=table2_ood_real "stages.evaluate.models=$MODELS" \
    "stages.evaluate.datasets=[road_anomaly],[smiyc_ra21],[smiyc_ro21],[fs_lost_and_found]"
# 3. PCC of each OOD metric, synthetic OOD objects vs Road Anomaly.
run profile="$PROFILE" +experiment=correlation task_name=table2 stages.correlate.class_metrics=[] \
    "stages.correlate.metrics=[auroc_msp,ap_msp,fpr95_msp,auroc_max_logit,ap_max_logit,fpr95_max_logit,auroc_entropy,ap_entropy,fpr95_entropy]" \
    stages.correlate.domains=[ood_objects] '+stages.correlate.real_datasets.ood_objects=road_anomaly' \
    stages.correlate.generators=[sd15]
# -> outputs/artifacts/analysis/table2/table1_<metric>.{csv,md,tex} (rows: generator, column: ood_objects)
