#!/usr/bin/env bash
# Table 2 / S10-S11: OOD detection. The zoo is scored (MSP, max logit, entropy; AUROC, AP, FPR95) on the
# synthetic OOD-object set and on the real OOD benchmarks present, the per-model scores are correlated (synthetic
# OOD objects vs Road Anomaly), and RbA (Swin-B, Swin-L; RbA's released "1dl" checkpoints) is fine-tuned with
# outliers: Table 2's rows no OE / + COCO / + synthetic curated / + synthetic all, each scored on Road Anomaly,
# SMIYC RA21/RO21 and FS Lost&Found (sets not on disk: "not run: <set> not present"). docs/ood_detection.md.
#   COCO_ROOT=/data/coco_proxy  the COCO outlier set (images/ + masks/); unset: the row says "not run: COCO not given"
#   CURATED=/path/curated.txt   the curated item list (default: curated.txt beside the OOD-object set)
source "$(dirname "$0")/_common.sh"
OOD_SETS="road_anomaly,smiyc_ra21,smiyc_ro21,fs_lost_and_found"

# 1. Synthetic OOD objects (inpainting + Grounded-SAM masks + refinement), one job per backbone.
run -m "${COMMON[@]}" +experiment=ood_objects task_name=table2_ood_objects backbone=sd15 \
    "stages.evaluate.models=$MODELS"
# 2. The zoo on the real OOD benchmarks present: models x benchmarks (absent sets are left out).
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table2_ood_real "stages.evaluate.models=$MODELS" \
    stages.evaluate.skip_absent=true "stages.evaluate.datasets=[road_anomaly],[smiyc_ra21],[smiyc_ro21],[fs_lost_and_found]"
# 3. PCC of each OOD metric, synthetic OOD objects vs Road Anomaly.
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=table2 stages.correlate.class_metrics=[] \
    "stages.correlate.metrics=[auroc_msp,ap_msp,fpr95_msp,auroc_max_logit,ap_max_logit,fpr95_max_logit,auroc_entropy,ap_entropy,fpr95_entropy]" \
    stages.correlate.domains=[ood_objects] '+stages.correlate.real_datasets.ood_objects=road_anomaly' \
    stages.correlate.generators=[sd15]
# -> outputs/artifacts/analysis/table2/table1_<metric>.{csv,md,tex} (rows: generator, column: ood_objects)

# 4. RbA rows of Table 2. "Curated" is a list of accepted item ids that you edit; the tiny profile keeps every
#    second accepted item (python -m synthrel.ood_detection.curated writes the full list to start from).
FT=stages.ood_detection.rba.finetune
cfg_value() {  # the resolved value of config key $2 under package $1
    $PYTHON -m synthrel.run profile="$PROFILE" +stage=[ood_detection] backbone=sd15 --cfg job --resolve \
        --package "$1" | sed -n "s/^$2: //p"
}
CURATED=${CURATED:-$(cfg_value $FT curated_list)}
if [ "$PROFILE" = tiny ] && [ ! -f "$CURATED" ]; then
    $PYTHON -m synthrel.ood_detection.curated "$(cfg_value datasets.ood_objects root)" "$CURATED" --every 2
fi
run "${COMMON[@]}" +stage=[ood_detection,report] task_name=table2_rba backbone=sd15 \
    stages.ood_detection.zoo_scores=false "stages.ood_detection.rba.datasets=[$OOD_SETS]" \
    $FT.enabled=true "$FT.curated_list=$CURATED" ${COCO_ROOT:+"$FT.coco_root=$COCO_ROOT"}
# -> outputs/artifacts/analysis/table2_rba/table2.{csv,md,tex} (beside the paper's numbers) and report.md
