#!/usr/bin/env bash
# Table 5 (supplementary D): per-class PCC (IoU of each of the 19 classes) per shift, plus heat maps.
# Needs the evaluations of table1.sh (steps 1-3).
source "$(dirname "$0")/_common.sh"
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=table5 stages.correlate.metrics=[] \
    stages.correlate.class_metrics=[IoU] stages.correlate.generators=[sd15,sdxl]
# -> outputs/artifacts/analysis/table5/table5_IoU_{sd15,sdxl}.{csv,md,tex} and *_heatmap.{png,pdf}

# Data-size ablation (S13), needs per_image_confusion.npy from the evaluate stage:
run profile="$PROFILE" real_split="$REAL_SPLIT" +experiment=correlation task_name=ablation_data_size stages.correlate.metrics=[mIoU] \
    stages.correlate.class_metrics=[] "stages.correlate.ablation.sizes=[16,32,64,128,256,512]" \
    stages.correlate.ablation.repeats=10
