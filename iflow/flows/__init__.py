"""Normalizing-flow transforms: presets on nflows, the spline coupling, the multi-scale Glow."""
