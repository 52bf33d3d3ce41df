"""The reference plant's physics and faults: the simulator service publishes them, the scorer trains and
evaluates on them by default, and the tests use them as ground truth."""
