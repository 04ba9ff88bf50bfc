"""Test-session settings."""

import torch

# The tests use tiny tensors, for which torch's intra-op threads only add spin-waiting; on a busy
# 2-core machine multi-threaded tiny ops were measured over 10x slower. Subprocess tests (the CLI)
# still use the configured thread count.
torch.set_num_threads(1)
