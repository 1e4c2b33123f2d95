"""Pin torch to one thread for the dgr tests.

The unit tests use tensors of a few hundred numbers. With two intra-op threads on a two-core machine
that another process keeps busy, torch's threads wait on each other and a 0.1 s sequence takes 30 s;
one thread keeps every test fast and its timing independent of the machine's load.
"""

import torch

torch.set_num_threads(1)
