"""Analysis of runs and models, outside the training path.

    gpt_jax.analysis.plot                   loss curves of workdirs' metrics.jsonl to a PNG (no jax)
    gpt_jax.analysis.attention_maps         per-layer/head attention weights of a prompt, heatmaps
    gpt_jax.analysis.classification_report  accuracy, per-class P/R/F1, confusion matrix (numpy only)

This file imports nothing, so importing one analysis module never pulls in the others.
"""
