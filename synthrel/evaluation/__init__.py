"""One-pass evaluation of zoo models on datasets: engine, results store, EvaluateJob."""

#: results store: {model: reason} of the zoo models a whole-zoo evaluate run left out (read by the analysis)
NOT_EVALUATED = "not_evaluated.json"
