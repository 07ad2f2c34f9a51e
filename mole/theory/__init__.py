"""Theory experiments behind the (strong) lottery ticket proofs: random subset sum and number partitioning."""
