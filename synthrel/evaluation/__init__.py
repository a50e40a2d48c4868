"""One-pass evaluation of zoo models on datasets: engine, results store, EvaluateJob."""

#: results store: `<results dir>/not_evaluated/<model>.json` = {"model", "reason"} for each zoo model that an
#: evaluate run left out (no weights); one file per model, so parallel sweep jobs never overwrite each other
NOT_EVALUATED = "not_evaluated"
