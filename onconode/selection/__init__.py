"""Which series of a study a model should read: classify each series from every header that speaks
to it (and from a few pixels where headers are silent or disagree), then match the classification
against what each model's manifest accepts. Pure functions over plain values; no state, no network.
"""
