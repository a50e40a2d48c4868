#!/usr/bin/env bash
# Table 4 (supplementary C): FID between each synthetic set and its real counterpart (lower is better),
# with the Cityscapes (no augmentation) baseline row. Standard FID needs the Inception weights file
# (weights-inception-2015-12-05-6726825d.pth) on disk (no extra package: docs/install.md, FID):
#   FID_WEIGHTS=/path/to/weights-inception-2015-12-05-6726825d.pth bash experiments/table4.sh
# With PROFILE=tiny the random tiny extractor is used (offline; values not comparable to the paper's).
source "$(dirname "$0")/_common.sh"
if [ "$PROFILE" = tiny ]; then FID=(stages.fid.feature_extractor=tiny "stages.fid.resolution=[64,64]")
else FID=(stages.fid.feature_extractor=inception "stages.fid.feature_extractor_weights_path=${FID_WEIGHTS:?set FID_WEIGHTS}"); fi

# Synthetic sets (table1.sh step 1) vs real: one job per backbone x domain.
run -m "${COMMON[@]}" +stage=[fid] task_name=table4 "${FID[@]}" backbone=sd15,sdxl domain=night,rain,snow,fog
# Cityscapes val (no augmentation) vs real.
run -m "${COMMON[@]}" +stage=[fid] task_name=table4 "${FID[@]}" domain=night,rain,snow,fog \
    '+stages.fid.pairs=[{generator: cityscapes, domain: ${domain.name}, real: ${synthrel.real:reported}, synthetic: ${synthrel.reported:cityscapes}}]'
# Baseline generators vs real (their sets are written by table1.sh step 3b): Hendrycks' corruptions per domain,
# physics-based fog per beta, and the external generator (EXTERNAL=tsit).
BASELINE_PAIR='+stages.fid.pairs=[{generator: ${generator.name}, domain: ${domain.name}, real: ${synthrel.real:reported}, synthetic: baseline}]'
run -m "${COMMON[@]}" +stage=[fid] task_name=table4 "${FID[@]}" +generator=hendrycks domain=night,rain,snow,fog "$BASELINE_PAIR"
run -m "${COMMON[@]}" +stage=[fid] task_name=table4 "${FID[@]}" +generator=physics_fog domain=fog "generator.beta=$BETAS" \
    "$BASELINE_PAIR"
if [ -n "$EXTERNAL" ]; then
  run -m "${COMMON[@]}" +stage=[fid] task_name=table4 "${FID[@]}" "+generator=$EXTERNAL" "${EXTERNAL_ARGS[@]}" \
      "domain=$EXTERNAL_DOMAINS" "$BASELINE_PAIR"
else echo "external generator row: not run (set EXTERNAL=tsit and TSIT_DIR, see synthrel/conf/generator/tsit.yaml)"; fi
run profile="$PROFILE" real_split="$REAL_SPLIT" +stage=[report] task_name=table4
# -> outputs/artifacts/analysis/table4/table4_fid.{csv,md,tex}, fid.csv (every setting), report.{md,html}
