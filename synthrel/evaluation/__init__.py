"""One-pass evaluation of zoo models on datasets: engine, results store, EvaluateJob."""
