"""Conditional diffusion over parameter tokens: data module, denoiser, system, sampling."""
