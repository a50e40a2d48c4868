"""OOD detection: the zoo's softmax/logit scores on OOD sets (spec S10) and RbA with synthetic outliers (S11)."""
