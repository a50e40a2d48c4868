#!/usr/bin/env bash
# Fig. 15 / Fig. 16 (supplementary): predictions of chosen zoo models on the real set and the synthetic set of each
# shift (Fig. 15: the paper shows SegFormer-B5 beside Semantic-FPN and MobileNetV3), and their max-softmax
# confidence maps on synthetic inpainted OOD objects and on Road Anomaly (Fig. 16). Needs the synthetic sets of
# table1.sh (step 1), the OOD-object set of table2.sh (step 1) and the zoo's weights.
#   FIG_MODELS=segformer_b5,semfpn_r50  the zoo keys to draw (default below; tiny: three demo-zoo models)
#   BACKBONE=sdxl                       the generator whose synthetic sets are drawn (default sd15)
source "$(dirname "$0")/_common.sh"
if [ "$PROFILE" = tiny ]; then FIG_MODELS=${FIG_MODELS:-segformer_b0,segformer_b0_s20,pspnet_r18}
else FIG_MODELS=${FIG_MODELS:-segformer_b5,semfpn_r50,mobilenetv3}; fi

run "${COMMON[@]}" +stage=[qualitative,report] task_name=fig15_16 "backbone=${BACKBONE:-sd15}" \
    "stages.qualitative.models=[$FIG_MODELS]"
# -> outputs/artifacts/analysis/fig15_16/fig15_predictions.{png,pdf}, fig16_ood_confidence.{png,pdf}, report.{md,html}
