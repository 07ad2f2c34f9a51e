"""Conditional diffusion over parameter tokens: data module, denoiser, system, the model folder, sampling."""
