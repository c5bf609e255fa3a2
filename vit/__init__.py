"""The ViT model library: configuration, MindSpore model, preprocessing and weight conversion.

Imports nothing from the service, the store, training or the CLI.
"""
