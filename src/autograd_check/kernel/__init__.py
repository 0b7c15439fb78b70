"""The comparison kernel: tolerances and statistics (compare), why a gradient is wrong (diagnose),
and what a result shows of a tensor (views). Pure: given tensors, it returns data."""
