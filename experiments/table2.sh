#!/usr/bin/env bash
# Table 2 / S10-S11: OOD detection. The zoo is scored (MSP, max logit, entropy; AUROC, AP, FPR95) on the
# synthetic OOD-object set and on the real OOD benchmarks present, the per-model scores are correlated (synthetic
# OOD objects vs Road Anomaly: the curated items and every accepted item = "automatic", each in both OOD
# conventions, rba_pooled and genval_per_image), and RbA (Swin-B, Swin-L; RbA's released "1dl" checkpoints) is fine-tuned with
# outliers: Table 2's rows no OE / + COCO / + synthetic curated / + synthetic all, each scored on Road Anomaly,
# SMIYC RA21/RO21 and FS Lost&Found (sets not on disk: "not run: <set> not present"). docs/ood_detection.md.
#   COCO_ROOT=/data/coco_proxy  the COCO outlier set (images/ + masks/); unset: the row says "not run: COCO not given"
#   CURATED=/path/curated.txt   the curated item list (default: curated.txt beside the OOD-object set)
#   RBA_SCHEDULE=rba_official   RbA's own 2000 fine-tuning iterations instead of the supplementary's 5000
source "$(dirname "$0")/_common.sh"
OOD_SETS="road_anomaly,smiyc_ra21,smiyc_ro21,fs_lost_and_found"

# 1. Synthetic OOD objects (inpainting + Grounded-SAM masks + refinement), one job per backbone.
run -m "${COMMON[@]}" +experiment=ood_objects task_name=table2_ood_objects backbone=sd15 \
    "stages.evaluate.models=$MODELS"
# 1b. The curated set: a list of accepted item ids that you edit; the tiny profile keeps every second accepted item
#     (python -m synthrel.ood_detection.curated writes the full list to start from). The zoo is scored on it too.
FT=stages.ood_detection.rba.finetune
cfg_value() {  # the resolved value of config key $2 under package $1
    $PYTHON -m synthrel.run profile="$PROFILE" +stage=[ood_detection] backbone=sd15 --cfg job --resolve \
        --package "$1" | sed -n "s/^$2: //p"
}
CURATED=${CURATED:-$(cfg_value $FT curated_list)}
if [ "$PROFILE" = tiny ] && [ ! -f "$CURATED" ]; then
    $PYTHON -m synthrel.ood_detection.curated "$(cfg_value datasets.ood_objects root)" "$CURATED" --every 2
fi
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table2_ood_curated backbone=sd15 "stages.evaluate.models=$MODELS" \
    stages.evaluate.datasets=[ood_objects_curated] "datasets.ood_objects_curated.item_list=$CURATED"
# 2. The zoo on the real OOD benchmarks present: models x benchmarks (absent sets are left out).
run -m "${COMMON[@]}" +stage=[evaluate] task_name=table2_ood_real "stages.evaluate.models=$MODELS" \
    stages.evaluate.skip_absent=true "stages.evaluate.datasets=[road_anomaly],[smiyc_ra21],[smiyc_ro21],[fs_lost_and_found]"
# 3. PCC of each OOD metric over the zoo, synthetic OOD objects (curated; automatic = every accepted item) vs Road
#    Anomaly, in both OOD conventions: rba_pooled (pooled over the set's pixels, auroc_/ap_/fpr95_<score>) and
#    genval_per_image (mean of per-image metrics, img_auroc_/img_fpr95_<score>).
POOLED=auroc_msp,ap_msp,fpr95_msp,auroc_max_logit,ap_max_logit,fpr95_max_logit,auroc_entropy,ap_entropy,fpr95_entropy
PER_IMAGE=img_auroc_msp,img_fpr95_msp,img_auroc_max_logit,img_fpr95_max_logit,img_auroc_entropy,img_fpr95_entropy
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=table2 stages.correlate.class_metrics=[] \
    "stages.correlate.metrics=[$POOLED,$PER_IMAGE]" stages.correlate.domains=[ood_objects_curated,ood_objects] \
    '+stages.correlate.real_datasets.ood_objects=road_anomaly' \
    '+stages.correlate.real_datasets.ood_objects_curated=road_anomaly' stages.correlate.generators=[sd15]
# -> outputs/artifacts/analysis/table2/table2_pcc_sd15.{csv,md,tex}: rows '<metric> (<convention>)', columns curated
#    and automatic (all accepted); also table1_<metric>.* per metric (columns ood_objects_curated, ood_objects)

# 4. RbA rows of Table 2, fine-tuned for the supplementary's 5000 iterations (RBA_SCHEDULE=rba_official: RbA's
#    own 2000; the tiny profile runs 2), with the curated list of step 1b.
RBA_SCHEDULE=${RBA_SCHEDULE:-supplementary}
run "${COMMON[@]}" +stage=[ood_detection,report] task_name=table2_rba backbone=sd15 \
    stages.ood_detection.zoo_scores=false "stages.ood_detection.rba.datasets=[$OOD_SETS]" \
    $FT.enabled=true "$FT.schedule=$RBA_SCHEDULE" "$FT.curated_list=$CURATED" ${COCO_ROOT:+"$FT.coco_root=$COCO_ROOT"}
# -> outputs/artifacts/analysis/table2_rba/table2.{csv,md,tex} (beside the paper's numbers) and report.md
