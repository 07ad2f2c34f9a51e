"""The checkpoint zoo: sweep specs, the stacked trainer, variants and the shard store."""
