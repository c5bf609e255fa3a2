"""Loaded model versions: load beside, warm, swap, drain and retire."""
