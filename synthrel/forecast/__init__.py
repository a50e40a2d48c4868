"""Forecast a model's real-world reliability from its synthetic-test results, by regression over a reference zoo.

`stats`: OLS with a t prediction interval and leave-one-model-out validation; `reference`: the shareable
reference results table; `job`: the forecast stage.
"""
