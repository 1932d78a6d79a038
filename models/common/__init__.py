"""Neural building blocks, losses, dataset and trainer shared by all reenactment models."""
