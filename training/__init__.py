"""Offline training and evaluation: ImageFolder data, the MAE recipe, resume, msrun data parallelism.

``trainer.train`` (the loop), ``evaluate`` (top-1/top-5 over every image, into the card), ``api.Trainer``
(the seed's Python surface), ``distributed`` (the msrun entry script), ``bootstrap`` (the digits default
model). Imports vit and model_store; nothing here sets global MindSpore state except the entry points.
"""
