"""--ranks N: a model's gradients under DDP or FSDP2 on N ranks, against one process's
full-batch gradient (the launcher, the ranks' meeting point, each rank's work, the verdict)."""
