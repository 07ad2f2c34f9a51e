"""The mask generator: supermasks for given frozen random weights, in one pass (model, system, construction, sampling)."""
